"""One training epoch and one validation pass, as plain functions (no set-up, no checkpoints, no printing)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hhrnet.config import Config
from hhrnet.errors import TrainingError
from hhrnet.losses import HigherHRNetLoss


@dataclass
class StepReport:
    """Running figures of the epoch so far, handed to the reporter every ``print_freq`` steps."""

    epoch: int
    step: int  # steps done in this epoch, counting those before a mid-epoch resume
    total: int  # steps in this epoch
    means: dict[str, float]  # mean loss terms over the epoch so far (factors applied) and ``grouped``
    lr: float
    images_per_s: float
    seconds: float  # seconds in this epoch so far (this process)


@dataclass
class EpochStats:
    loss: float = 0.0
    terms: dict[str, float] = field(default_factory=dict)  # mean loss terms, plus ``grouped`` when tags are learnt
    steps: int = 0  # steps run by this call
    images: int = 0
    seconds: float = 0.0
    stopped: bool = False  # ``should_stop`` ended the epoch early
    skipped: list[str] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def autocast(device: torch.device, amp: str) -> Any:
    if device.type != "cuda" or amp == "none":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


def to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return {
        "image": batch["image"].to(device, non_blocking=True, memory_format=fmt),
        "heatmaps": [t.to(device, non_blocking=True) for t in batch["heatmaps"]],
        "masks": [t.to(device, non_blocking=True) for t in batch["masks"]],
        "joints": [t.to(device, non_blocking=True) for t in batch["joints"]],
    }


def train_one_epoch(
    model: nn.Module,
    criterion: HigherHRNetLoss,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    loader: Iterable[dict[str, Any]],
    *,
    epoch: int,
    device: torch.device,
    amp: str,
    channels_last: bool,
    print_freq: int,
    max_steps: int | None = None,
    first_step: int = 0,
    total: int | None = None,
    lr_at: Callable[[int], float] | None = None,
    should_stop: Callable[[int], bool] | None = None,
    report: Callable[[StepReport], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> EpochStats:
    """One pass over ``loader`` (which starts at step ``first_step`` of the epoch when resuming mid-epoch).

    ``lr_at(step)`` sets the learning rate before each step; ``should_stop(step)`` (after each step) ends the
    epoch early, e.g. when a time budget is spent. Every ``print_freq`` steps and at the end, the NaN check runs
    and ``report`` receives the running means: the loss terms and ``grouped``, the fraction of ground-truth
    people whose joints the tags group correctly (:func:`hhrnet.losses.grouping_counts`). Host synchronisation
    happens only there on GPU (the NaN check reads an accumulated device flag); on CPU every step is checked.
    A non-finite loss raises :class:`~hhrnet.errors.TrainingError` naming the epoch and step.
    """
    model.train()
    stats = EpochStats()
    sums: dict[str, torch.Tensor] = {}
    grouped = torch.zeros(2, dtype=torch.int64, device=device)  # (correct, people)
    bad = torch.zeros((), dtype=torch.bool, device=device)
    if total is None:
        total = first_step + len(loader)  # type: ignore[arg-type]
    if max_steps is not None:
        total = min(total, max_steps)
    window_start = first_step
    start = time.perf_counter()
    step = first_step
    for batch in loader:
        if step >= total:
            break
        stats.skipped.extend(batch.get("skipped", ()))
        b = to_device(batch, device, channels_last)
        if lr_at is not None:
            lr = lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
        with autocast(device, amp):
            outputs = model(b["image"])  # [(B, 2J, H/4, W/4), (B, J, H/2, W/2)]
        loss, terms = criterion(outputs, b["heatmaps"], b["masks"], b["joints"])
        finite = torch.isfinite(loss)
        bad |= ~finite
        if device.type == "cpu" and not bool(finite):
            raise TrainingError(f"loss became {float(loss.detach())} at epoch {epoch}, step {step}: training stopped")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        for k, v in terms.items():
            sums[k] = sums.get(k, torch.zeros((), device=device)) + v.detach().float()
        counts = criterion.grouping_counts(outputs, b["joints"])
        if counts is not None:
            grouped += torch.stack(counts)
        stats.steps += 1
        stats.images += int(b["image"].shape[0])
        step += 1
        stop = should_stop is not None and should_stop(step)
        if step % print_freq == 0 or step == total or stop:
            if bool(bad):  # one host sync per window on GPU
                raise TrainingError(
                    f"loss became non-finite at epoch {epoch}, between steps {window_start} and {step - 1}: "
                    "training stopped"
                )
            window_start = step
            if report is not None:
                elapsed = time.perf_counter() - start
                lr_now = float(optimizer.param_groups[0]["lr"])
                means = _means(sums, grouped, stats.steps)
                report(StepReport(epoch, step, total, means, lr_now, stats.images / max(elapsed, 1e-9), elapsed))
        if on_step is not None:
            on_step(step, total)
        if stop:
            stats.stopped = step < total
            break
    stats.seconds = time.perf_counter() - start
    stats.terms = _means(sums, grouped, stats.steps)
    stats.loss = stats.terms.get("total", float("nan"))
    return stats


def _means(sums: dict[str, torch.Tensor], grouped: torch.Tensor, steps: int) -> dict[str, float]:
    means = {k: float(v) / max(steps, 1) for k, v in sums.items()}
    correct, people = (int(v) for v in grouped.tolist())
    if people > 0:
        means["grouped"] = correct / people
    return means


def evaluate(
    model: nn.Module, cfg: Config, image_dir: Path, ann_file: Path, *, device: torch.device, max_images: int | None
) -> dict[str, float]:
    """COCO-style AP of ``model`` on a validation split (the official test pipeline, fast decoder)."""
    from hhrnet.codec import resolve_codec
    from hhrnet.evaluate import evaluate_model
    from hhrnet.inference import torch_network

    net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    was_training = net.training
    try:
        network = torch_network(net, device=str(device))
        result = evaluate_model(network, resolve_codec(cfg), image_dir, ann_file, max_images=max_images)
    finally:
        net.train(was_training)
    return dict(result.stats)


__all__ = ["EpochStats", "StepReport", "autocast", "evaluate", "to_device", "train_one_epoch"]
