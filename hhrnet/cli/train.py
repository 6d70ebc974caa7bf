"""``hhrnet train``: train from a preset or official YAML; ``torchrun ... -m hhrnet train`` for DDP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from hhrnet.cli.info import ConfigOpt, SetOpt

Device = Literal["auto", "cpu", "cuda"]


def train(
    config: ConfigOpt = "tiny",
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default: train.output_dir).")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Dataset root (default: data.root).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint.pth when it exists.")] = True,
    resume_from: Annotated[Path | None, typer.Option(help="Resume from this training checkpoint.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Stop after this epoch (default: train.end_epoch).")] = None,
    minutes: Annotated[
        float | None,
        typer.Option(help="Wall-clock training budget (sets train.minutes; the lr schedule follows the time)."),
    ] = None,
    device: Annotated[Device, typer.Option(help="Training device.")] = "auto",
    max_steps_per_epoch: Annotated[int | None, typer.Option(help="Cap steps per epoch (smoke runs).")] = None,
    val_max_images: Annotated[int | None, typer.Option(help="Validate on at most N images.")] = None,
) -> None:
    """Train HigherHRNet; writes checkpoint.pth every epoch, model_best.pth (by val AP) and model_final.pth.

    By default a run is a fixed number of optimiser steps (train.end_epoch epochs; the learning rate follows the
    step), so a seeded run repeats bit for bit on one machine and thread count, however fast the machine is.
    Progress shows the loss terms, `grouped` (the fraction of people whose joints the tags group correctly), img/s
    and the ETA of the whole run. With --minutes the run stops when the budget is spent instead (the learning rate
    then follows the time, and a slower machine trains fewer steps); resuming it continues with the budget left."""
    from hhrnet.cli.common import check_number
    from hhrnet.config import resolve
    from hhrnet.predict import check_output_dir
    from hhrnet.training import train as run_train

    for flag, value in (
        ("--epochs", epochs),
        ("--max-steps-per-epoch", max_steps_per_epoch),
        ("--val-max-images", val_max_images),
    ):
        if value is not None:
            check_number(flag, value, 1, None)
    overrides = list(set_ or [])
    if minutes is not None:
        overrides.append(f"train.minutes={minutes}")
    cfg = resolve(config, overrides)
    check_output_dir(out if out is not None else cfg.train.output_dir)  # before any data is read
    result = run_train(
        cfg,
        output_dir=out,
        resume=resume_from if resume_from is not None else resume,
        device=None if device == "auto" else device,
        epochs=epochs,
        data_root=data_root,
        max_steps_per_epoch=max_steps_per_epoch,
        val_max_images=val_max_images,
    )
    best = f"best val AP {result.best_ap:.4f} (epoch {result.best_epoch})" if result.best_ap is not None else "no AP"
    typer.echo(
        f"ran {result.epochs_run} epochs in {result.seconds / 60:.1f} min (the run: {result.epochs_done} epochs, "
        f"{result.steps_done} steps, {result.train_seconds / 60:.1f} min); {best}; outputs in {result.output_dir}"
    )
