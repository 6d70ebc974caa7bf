"""What a run shows while it trains: a rich progress bar on a terminal, or log lines (CI / not a TTY), plus
TensorBoard scalars; each with the loss terms, the grouping figure and the ETA of the whole run."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from hhrnet.training.engine import StepReport

Log = Callable[[str], None]


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def fmt_terms(means: dict[str, float]) -> str:
    """``heatmap_0=0.0031 push_0=1e-4 ... grouped=0.84`` (``total`` last of the losses)."""
    shown = [f"{k}={v:.3g}" for k, v in means.items() if k not in ("total", "grouped")]
    if "total" in means:
        shown.append(f"loss={means['total']:.4g}")
    if "grouped" in means:
        shown.append(f"grouped={means['grouped']:.3f}")
    return " ".join(shown)


class Reporter:
    """``run_eta(epoch, step, total)`` gives the seconds left in the whole run (None while unknown)."""

    def __init__(
        self, *, quiet: bool, log: Log | None, writer: Any, run_eta: Callable[[int, int, int], float | None]
    ) -> None:
        self.quiet = quiet
        self.log = log
        self.writer = writer
        self.run_eta = run_eta
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self) -> Reporter:
        if not self.quiet:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TextColumn("run eta {task.fields[eta]}"),
            )
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def start_epoch(self, label: str, total: int, first_step: int) -> None:
        if self.progress is not None:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(label, total=total, completed=first_step, info="", eta="?")

    def step(self, done: int, total: int) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=done)

    def report(self, r: StepReport) -> None:
        eta = fmt_seconds(self.run_eta(r.epoch, r.step, r.total))
        if self.writer is not None:
            global_step = r.epoch * r.total + r.step
            for k, v in r.means.items():
                self.writer.add_scalar(f"train/{k}", v, global_step)
            self.writer.add_scalar("train/lr", r.lr, global_step)
            self.writer.add_scalar("train/images_per_s", r.images_per_s, global_step)
        if self.progress is not None and self.task is not None:
            info = f"loss {r.means.get('total', float('nan')):.4g}"
            if "grouped" in r.means:
                info += f" grouped {r.means['grouped']:.2f}"
            self.progress.update(self.task, info=info, eta=eta)
        elif self.log is not None:
            self.log(
                f"epoch {r.epoch + 1} step {r.step}/{r.total} {fmt_terms(r.means)} lr={r.lr:.2e} "
                f"{r.images_per_s:.1f} img/s run eta {eta}"
            )


__all__ = ["Reporter", "fmt_seconds", "fmt_terms"]
