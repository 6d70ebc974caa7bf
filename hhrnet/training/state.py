"""Where a run stands (epoch, step, seconds spent, best AP, history), RNG state, and the training checkpoint.

One flat checkpoint dict, written atomically at the end of every epoch and when a time budget runs out:
model, config, optimizer, AMP scaler, ``epoch`` (epochs completed), ``step`` (steps done inside ``epoch`` when
a budget stopped the run mid-epoch, else 0), ``train_seconds``, RNG states, best AP/epoch and history.

Resume semantics:

* epoch-based run (``train.minutes == 0``): resuming continues at the start of the next epoch and is
  exact: the weights after N epochs are bit-identical to an uninterrupted run (data order and augmentation
  depend only on (seed, epoch, index), the learning rate only on the epoch, RNG states are restored).
* time-budgeted run (``train.minutes > 0``): the checkpoint records the training seconds spent so far;
  resuming continues at the recorded (epoch, step) with the same data order and optimizer state, for the
  budget left (``train.minutes`` minus the recorded seconds), the learning rate following the recorded plus
  new seconds. A run whose budget is spent trains nothing when resumed: its checkpoint and figures stay as
  they are. It is not bit-identical to an uninterrupted run (the schedule follows the wall clock), and the
  seconds between the last checkpoint and a crash are not counted.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hhrnet.checkpoint import make_payload, read_checkpoint, save_checkpoint
from hhrnet.config import Config
from hhrnet.errors import CheckpointError

CHECKPOINT = "checkpoint.pth"
PREVIOUS = "checkpoint.prev.pth"  # the checkpoint before the last one: what a torn or corrupt last one falls back to
BEST = "model_best.pth"
FINAL = "model_final.pth"


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed: the next epoch to run
    step: int = 0  # steps already done inside `epoch` (a budget can stop a run mid-epoch)
    train_seconds: float = 0.0  # wall-clock seconds spent on the run, over every process that worked on it
    best_ap: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# RNG state in a weights_only-loadable form (tensors, lists, numbers only)
# --------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(v) for v in internal.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------


def resume_path(output_dir: Path, resume: bool | str | Path, auto_resume: bool) -> Path | None:
    """An explicit checkpoint, or ``output_dir/checkpoint.pth`` (else the previous one, when only that exists)
    when ``resume`` is True."""
    if isinstance(resume, str | Path) and str(resume):
        return Path(resume)
    if resume is True and auto_resume:
        for name in (CHECKPOINT, PREVIOUS):
            if (output_dir / name).is_file():
                return output_dir / name
    return None


def resume_from(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    say: Callable[[str], None],
) -> TrainState:
    """:func:`load_training_checkpoint`; a corrupt automatic ``checkpoint.pth`` falls back to the previous epoch's
    file, and the error says how to start over instead."""
    try:
        return load_training_checkpoint(path, model, optimizer, scaler)
    except CheckpointError as exc:
        previous = path.with_name(PREVIOUS)
        if path.name != CHECKPOINT or not previous.is_file():
            raise CheckpointError(f"{exc}; to start over instead, run with --no-resume") from None
        say(f"warning: {exc}; resuming from the previous checkpoint {previous}")
        try:
            return load_training_checkpoint(previous, model, optimizer, scaler)
        except CheckpointError as exc2:
            raise CheckpointError(
                f"{exc}; the previous one is unusable too ({exc2}); to start over, run with --no-resume"
            ) from None


def save_training_checkpoint(
    path: Path,
    model: nn.Module,
    cfg: Config,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    state: TrainState,
) -> None:
    payload = make_payload(
        model,
        cfg,
        optimizer=optimizer.state_dict(),
        scaler=scaler.state_dict() if scaler is not None else None,
        epoch=state.epoch,
        step=state.step,
        train_seconds=state.train_seconds,
        rng=rng_state(),
        best_ap=state.best_ap,
        best_epoch=state.best_epoch,
        history=state.history,
    )
    if path.name == CHECKPOINT and path.is_file():
        keep_previous(path, path.with_name(PREVIOUS))
    save_checkpoint(path, payload)  # atomic: checkpoint.pth is the old file or the new one, never absent or torn


def keep_previous(path: Path, previous: Path) -> None:
    """Make ``previous`` a copy of ``path`` (a hard link where the filesystem allows) without ever removing
    ``path``: a kill at any moment leaves the last complete checkpoint under its own name."""
    staged = previous.with_name(previous.name + ".tmp")
    staged.unlink(missing_ok=True)
    try:
        os.link(path, staged)  # the new checkpoint replaces path's name, not this inode
    except OSError:
        shutil.copyfile(path, staged)
    os.replace(staged, previous)


def load_training_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> TrainState:
    """Restore model, optimizer, scaler and RNG states from ``path``; returns where the run stands."""
    weights, meta = read_checkpoint(path)
    for key in ("optimizer", "epoch"):
        if key not in meta:
            raise CheckpointError(f"{path} is not a training checkpoint (no {key}); cannot resume")
    model.load_state_dict(weights)
    optimizer.load_state_dict(meta["optimizer"])
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    if "rng" in meta:
        set_rng_state(meta["rng"])
    return TrainState(
        epoch=int(meta["epoch"]),
        step=int(meta.get("step", 0)),
        train_seconds=float(meta.get("train_seconds", 0.0)),
        best_ap=meta.get("best_ap"),
        best_epoch=meta.get("best_epoch"),
        history=list(meta.get("history", [])),
    )


def save_weights(path: Path, model: nn.Module, cfg: Config, **extra: Any) -> None:
    """A deployable checkpoint (weights + config, no optimizer): model_best.pth / model_final.pth."""
    save_checkpoint(path, make_payload(model, cfg, **extra))


__all__ = [
    "BEST",
    "CHECKPOINT",
    "FINAL",
    "TrainState",
    "load_training_checkpoint",
    "resume_from",
    "resume_path",
    "rng_state",
    "save_training_checkpoint",
    "save_weights",
    "seed_everything",
    "set_rng_state",
]
