"""Learning-rate schedule and the run clock: what fraction of the run is done, when to stop, how long is left.

A run is epoch-based (``train.minutes == 0``: ``end_epoch`` epochs, official) or time-budgeted
(``train.minutes > 0``: wall-clock). Either way the learning rate is a pure function of the run fraction
``f`` in [0, 1]: ``f = (epoch + step / steps_per_epoch) / end_epoch`` for epoch-based runs,
``f = seconds spent / budget`` for budgeted ones. So a budgeted run on a slow or busy machine takes fewer
steps but still goes through its whole schedule and ends on time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from hhrnet.config import TrainConfig


def lr_multiplier(t: TrainConfig, fraction: float) -> float:
    """Factor on ``t.lr`` at run fraction ``fraction``.

    ``step``: ``lr_factor ** (number of milestones lr_step[i] / end_epoch <= fraction)``; at whole epochs of an
    epoch-based run this is exactly the official ``MultiStepLR`` stepped once per epoch. ``cosine``:
    ``(1 + cos(pi f)) / 2``. A linear warm-up over the first ``t.warmup`` of the run multiplies either.
    """
    f = min(max(fraction, 0.0), 1.0)
    if t.lr_schedule == "step":
        passed = sum(1 for m in t.lr_step if m / t.end_epoch <= fraction)
        factor = t.lr_factor**passed
    elif t.lr_schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * f))
    else:
        raise ValueError(f"unknown lr_schedule {t.lr_schedule!r}; expected 'step' or 'cosine'")
    if t.warmup > 0 and f < t.warmup:
        factor *= f / t.warmup
    return factor


@dataclass
class RunClock:
    """Seconds spent on a run, across the processes that worked on it (``spent_before`` comes from the
    checkpoint), read once per training step with :meth:`tick`.

    ``budget`` 0 means an epoch-based run: then :meth:`eta` extrapolates from this process's seconds per step.
    ``now`` is injectable so tests can drive the clock.
    """

    budget: float = 0.0
    spent_before: float = 0.0
    now: Callable[[], float] = field(default=lambda: 0.0)
    elapsed: float = 0.0
    steps: int = 0

    def __post_init__(self) -> None:
        self._start = self.now()
        self.elapsed = self.spent_before

    @property
    def budgeted(self) -> bool:
        return self.budget > 0

    def tick(self) -> float:
        """Read the clock after a step; returns the seconds spent on the run so far."""
        self.steps += 1
        self.elapsed = self.spent_before + (self.now() - self._start)
        return self.elapsed

    def read(self) -> float:
        """Read the clock without counting a step (between epochs)."""
        self.elapsed = self.spent_before + (self.now() - self._start)
        return self.elapsed

    @property
    def spent(self) -> bool:
        return self.budgeted and self.elapsed >= self.budget

    @property
    def fraction(self) -> float:
        return min(self.elapsed / self.budget, 1.0) if self.budgeted else 0.0

    @property
    def left(self) -> float:
        return max(self.budget - self.elapsed, 0.0)

    def eta(self, steps_left: int) -> float | None:
        """Seconds until the run ends: the budget left, or ``steps_left`` at this process's pace so far."""
        if self.budgeted:
            return self.left
        if self.steps == 0:
            return None
        return steps_left * (self.elapsed - self.spent_before) / self.steps


__all__ = ["RunClock", "lr_multiplier"]
