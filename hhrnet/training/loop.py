"""``train()``: set up, then run epochs until the epoch count or the time budget is reached.

Each part is a function of its own: device and process group (:mod:`.distributed`), data
(:func:`build_datasets`, :func:`make_loader`), model (:func:`build_training_model`), optimizer, resume
(:mod:`.state`), one epoch (:func:`.engine.train_one_epoch`), validation (:func:`.engine.evaluate`),
checkpointing (:mod:`.state`) and what is shown (:mod:`.progress`).
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler, SequentialSampler

from hhrnet.config import Config
from hhrnet.environment import running_in_ci
from hhrnet.errors import CheckpointError, TrainingError
from hhrnet.losses import HigherHRNetLoss
from hhrnet.model import build_model
from hhrnet.training.distributed import DistInfo, agree_max, barrier, init_distributed, pick_device, shutdown
from hhrnet.training.engine import EpochStats, evaluate, train_one_epoch
from hhrnet.training.progress import Log, Reporter, fmt_seconds, fmt_terms
from hhrnet.training.schedule import RunClock, lr_multiplier
from hhrnet.training.state import (
    BEST,
    CHECKPOINT,
    FINAL,
    TrainState,
    resume_from,
    resume_path,
    save_training_checkpoint,
    save_weights,
    seed_everything,
)


@dataclass
class TrainResult:
    output_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    best_ap: float | None
    best_epoch: int | None
    epochs_run: int  # epochs (complete or cut by the budget) run by this call
    seconds: float  # wall-clock seconds of this call
    train_seconds: float = 0.0  # seconds spent on the run over every call that worked on it (from the checkpoint)
    epochs_done: int = 0  # complete epochs of the run
    steps_done: int = 0  # optimizer steps of the run
    history: list[dict[str, float]] = field(default_factory=list)
    model: nn.Module | None = None  # the trained network (unwrapped), on its training device


# --------------------------------------------------------------------------------------------
# set-up
# --------------------------------------------------------------------------------------------


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    wd = t.wd if t.apply_weight_decay else 0.0
    fused = t.fused_optimizer or None  # None: torch's default implementation (official)
    if t.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=wd, fused=fused)  # official: lr only
    return torch.optim.SGD(
        model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=wd, nesterov=t.nesterov, fused=fused
    )


def build_datasets(cfg: Config, root: Path, log: Log) -> tuple[Any, tuple[Path, Path] | None]:
    """The augmented training set and the validation (annotation file, image dir), None when absent."""
    from hhrnet.data.coco import build_dataset, find_split_files

    dataset = build_dataset(cfg, "train", root=root, seed=cfg.train.seed)
    val_files: tuple[Path, Path] | None = None
    if cfg.train.val_every > 0:
        try:
            val_files = find_split_files(root, cfg.data.test_split)
        except Exception:  # no validation split: best = last, said below
            log("no validation split found: model_best.pth will be the last epoch")
    return dataset, val_files


class _Skip(Sampler[int]):
    """``base``'s indices without the first ``skip`` (resuming mid-epoch replays no batch twice)."""

    def __init__(self, base: Sampler[int], skip: int) -> None:
        self.base, self.skip = base, skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return max(len(self.base) - self.skip, 0)  # type: ignore[arg-type]


def make_loader(cfg: Config, dataset: Any, epoch: int, dist_info: DistInfo, first_step: int = 0) -> DataLoader:
    """A loader whose order depends only on (seed, epoch), starting at batch ``first_step`` of the epoch."""
    from hhrnet.data.coco import collate

    t = cfg.train
    if dist_info.enabled:
        sampler: Any = DistributedSampler(
            dataset, num_replicas=dist_info.world_size, rank=dist_info.rank, shuffle=t.shuffle, seed=t.seed
        )
        sampler.set_epoch(epoch)
    elif t.shuffle:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(t.seed * 1000 + epoch))
    else:
        sampler = SequentialSampler(dataset)
    if first_step:
        sampler = _Skip(sampler, first_step * t.images_per_gpu)
    return DataLoader(
        dataset,
        batch_size=t.images_per_gpu,
        sampler=sampler,
        num_workers=t.workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        drop_last=len(dataset) >= t.images_per_gpu * dist_info.world_size,
        persistent_workers=False,
    )


def steps_per_epoch(cfg: Config, dataset: Any, dist_info: DistInfo) -> int:
    per_rank = -(-len(dataset) // dist_info.world_size)  # DistributedSampler pads to equal shares
    if len(dataset) >= cfg.train.images_per_gpu * dist_info.world_size:
        return per_rank // cfg.train.images_per_gpu
    return -(-per_rank // cfg.train.images_per_gpu)


def build_training_model(cfg: Config, device: torch.device, dist_info: DistInfo, log: Log) -> nn.Module:
    """The network with its pretrained weights, on ``device`` (channels_last / SyncBatchNorm as configured)."""
    from hhrnet.checkpoint import load_pretrained

    model: nn.Module = build_model(cfg)
    if cfg.model.init_weights and cfg.model.pretrained:
        pretrained = Path(cfg.model.pretrained)
        if not pretrained.is_file():
            raise CheckpointError(
                f"pretrained weights {pretrained} not found (set model.pretrained='' to train from scratch)"
            )
        loaded = load_pretrained(model, pretrained, cfg.model.pretrained_layers)
        log(f"initialised {len(loaded)} tensors from {pretrained}")
    model.to(device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from the stubs
    if cfg.model.sync_bn:
        if device.type != "cuda" or not dist_info.enabled:
            log("note: model.sync_bn needs CUDA DDP; using ordinary BatchNorm")
        else:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def _wrap_ddp(model: nn.Module, device: torch.device, dist_info: DistInfo) -> nn.Module:
    if not dist_info.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=True)


def _all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _print(message: str) -> None:
    print(message, flush=True)  # progress lines reach a log file as they happen


def _quiet() -> bool:
    return running_in_ci() or not sys.stdout.isatty()


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


def train(
    cfg: Config,
    *,
    output_dir: str | Path | None = None,
    resume: bool | str | Path = True,
    device: str | None = None,
    epochs: int | None = None,
    data_root: str | Path | None = None,
    max_steps_per_epoch: int | None = None,
    val_max_images: int | None = None,
    progress: bool | None = None,
    log: Log | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> TrainResult:
    """Train ``cfg`` and return where the checkpoints are and what validation AP they reached.

    Epoch-based (``train.minutes == 0``) until ``epochs`` (default ``train.end_epoch``); time-budgeted
    (``train.minutes > 0``) until the budget is spent (or ``epochs``, when given, are done), with the learning
    rate following the spent fraction of the budget and a checkpoint written where the budget ran out. See
    :mod:`hhrnet.training.state` for what resuming means in each case.
    """
    started = time.perf_counter()
    t = cfg.train
    dev = pick_device(device)
    dist_info = init_distributed(dev)
    say: Log = log if log is not None else (_print if dist_info.main else (lambda _m: None))
    out = Path(output_dir if output_dir is not None else t.output_dir)
    if dist_info.main:
        out.mkdir(parents=True, exist_ok=True)
    root = Path(data_root) if data_root is not None else Path(cfg.data.root)
    # a budgeted run ends when the budget is spent (or at `epochs` when given); else after end_epoch epochs
    end_epoch = epochs if epochs is not None else (1 << 30 if t.minutes > 0 else t.end_epoch)
    quiet = (_quiet() if progress is None else not progress) or not dist_info.main
    if dev.type != "cuda" and t.amp != "none":
        say(f"note: train.amp={t.amp} needs a CUDA GPU; training in fp32 on {dev.type}")
    amp = t.amp if dev.type == "cuda" else "none"
    seed_everything(t.seed + dist_info.rank)

    dataset, val_files = build_datasets(cfg, root, say)
    model = build_training_model(cfg, dev, dist_info, say)
    criterion = HigherHRNetLoss(cfg.loss, cfg.model.num_joints, cfg.model.tag_dim).to(dev)
    optimizer = build_optimizer(cfg, model)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    state = TrainState(epoch=t.begin_epoch)
    source = resume_path(out, resume, t.auto_resume)
    if source is not None:
        state = resume_from(source, model, optimizer, scaler, say)
        say(f"resumed from {source} at epoch {state.epoch}" + (f" step {state.step}" if state.step else ""))
    net = _wrap_ddp(model, dev, dist_info)
    per_epoch = steps_per_epoch(cfg, dataset, dist_info)
    if max_steps_per_epoch is not None:
        per_epoch = min(per_epoch, max_steps_per_epoch)
    run = RunClock(budget=t.minutes * 60.0, spent_before=state.train_seconds, now=clock)
    if run.budgeted:
        say(f"time budget {t.minutes:g} min, {fmt_seconds(run.left)} left; lr schedule {t.lr_schedule} over the budget")

    def run_eta(epoch: int, step: int, total: int) -> float | None:
        return run.eta((end_epoch - epoch - 1) * per_epoch + total - step)

    writer = None
    if dist_info.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(out / "tensorboard"))
    epochs_run = 0
    try:
        with Reporter(quiet=quiet, log=say if quiet else None, writer=writer, run_eta=run_eta) as reporter:
            while state.epoch < end_epoch and not run.spent:
                epoch, first = state.epoch, state.step
                reporter.start_epoch(_epoch_label(epoch, end_epoch, run), per_epoch, first)
                stats = _train_epoch(
                    cfg,
                    net,
                    criterion,
                    optimizer,
                    scaler,
                    dataset,
                    dist_info,
                    dev,
                    amp,
                    epoch,
                    first,
                    per_epoch,
                    run,
                    reporter,
                )
                epochs_run += 1
                done = first + stats.steps
                finished = done >= per_epoch
                state.epoch, state.step = (epoch + 1, 0) if finished else (epoch, done)
                last = state.epoch >= end_epoch or run.spent
                record = _record(epoch, stats, done, per_epoch, optimizer)
                is_best = val_files is None
                if val_files is not None and ((epoch + 1) % t.val_every == 0 or last):
                    if dist_info.main:
                        is_best = _validate(net, cfg, val_files, dev, val_max_images, epoch, record, state, writer)
                    barrier(dist_info)
                state.history.append(record)
                state.train_seconds = run.elapsed = agree_max(dist_info, run.read(), dev)
                if dist_info.main:
                    _save(out, model, cfg, optimizer, scaler, state, is_best)
                    say(_epoch_line(epoch, end_epoch, record, run))
                barrier(dist_info)
        if dist_info.main and epochs_run:
            save_weights(out / FINAL, model, cfg, epoch=state.epoch, train_seconds=state.train_seconds)
    finally:
        if writer is not None:
            writer.close()
        shutdown(dist_info)
    if run.budgeted and run.spent and epochs_run == 0:
        say(f"the time budget of this run ({t.minutes:g} min) is already spent: nothing to train")
    best = out / BEST
    return TrainResult(
        output_dir=out,
        last_checkpoint=out / CHECKPOINT,
        best_checkpoint=best if best.is_file() else None,
        best_ap=state.best_ap,
        best_epoch=state.best_epoch,
        epochs_run=epochs_run,
        seconds=time.perf_counter() - started,
        train_seconds=state.train_seconds,
        epochs_done=state.epoch,
        steps_done=int(sum(h.get("steps", 0) for h in state.history)),
        history=state.history,
        model=model,
    )


def _train_epoch(
    cfg: Config,
    net: nn.Module,
    criterion: HigherHRNetLoss,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    dataset: Any,
    dist_info: DistInfo,
    device: torch.device,
    amp: str,
    epoch: int,
    first: int,
    per_epoch: int,
    run: RunClock,
    reporter: Reporter,
) -> EpochStats:
    """One epoch from step ``first``, with the learning rate and the stop decision from ``run``.

    Without DDP the clock is read after every step. Under DDP a budgeted run must take the same decisions on
    every rank (the same learning rate, the same last step), so the ranks agree on the clock (max over ranks)
    every ``print_freq`` steps and use that value in between.
    """
    t = cfg.train
    dataset.set_epoch(epoch)
    loader = make_loader(cfg, dataset, epoch, dist_info, first_step=first)

    def lr_at(step: int) -> float:
        fraction = run.fraction if run.budgeted else (epoch + step / per_epoch) / t.end_epoch
        return t.lr * lr_multiplier(t, fraction)

    def should_stop(step: int) -> bool:
        if not (dist_info.enabled and run.budgeted):
            run.tick()
        elif step % t.print_freq == 0 or step == per_epoch:
            run.elapsed = agree_max(dist_info, run.tick(), device)
        else:
            run.steps += 1
        return run.spent

    return train_one_epoch(
        net,
        criterion,
        optimizer,
        scaler,
        loader,
        epoch=epoch,
        device=device,
        amp=amp,
        channels_last=t.channels_last,
        print_freq=t.print_freq,
        first_step=first,
        total=per_epoch,
        lr_at=lr_at,
        should_stop=should_stop,
        report=reporter.report,
        on_step=reporter.step,
    )


def _validate(
    net: nn.Module,
    cfg: Config,
    val_files: tuple[Path, Path],
    device: torch.device,
    max_images: int | None,
    epoch: int,
    record: dict[str, float],
    state: TrainState,
    writer: Any,
) -> bool:
    """AP on the validation split into ``record`` (and TensorBoard); updates the best AP; True if it is the best."""
    ann_file, image_dir = val_files
    ap = evaluate(net, cfg, image_dir, ann_file, device=device, max_images=max_images)
    record["val_AP"] = ap.get("AP", float("nan"))
    if writer is not None:
        writer.add_scalar("val/AP", record["val_AP"], epoch + 1)
    if state.best_ap is None or record["val_AP"] > state.best_ap:
        state.best_ap, state.best_epoch = record["val_AP"], epoch + 1
        return True
    return False


def _save(
    out: Path,
    model: nn.Module,
    cfg: Config,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    state: TrainState,
    is_best: bool,
) -> None:
    """The training checkpoint (and model_best.pth); never from non-finite weights."""
    if not _all_finite(model):
        raise TrainingError(f"weights became non-finite in epoch {state.epoch}; checkpoint not written")
    save_training_checkpoint(out / CHECKPOINT, model, cfg, optimizer, scaler, state)
    if is_best:
        save_weights(out / BEST, model, cfg, epoch=state.epoch, val_ap=state.best_ap)


def _record(
    epoch: int, stats: EpochStats, done: int, per_epoch: int, optimizer: torch.optim.Optimizer
) -> dict[str, float]:
    record = {
        "epoch": float(epoch + 1),
        "steps": float(stats.steps),
        "loss": stats.loss,
        "images_per_s": stats.images_per_s,
        "lr": float(optimizer.param_groups[0]["lr"]),
    }
    if done < per_epoch:
        record["epoch_fraction"] = done / per_epoch
    for k, v in stats.terms.items():
        if k != "total":
            record[k] = v
    if stats.skipped:
        record["skipped"] = float(len(stats.skipped))
    return record


def _epoch_label(epoch: int, end_epoch: int, run: RunClock) -> str:
    """'epoch 3/20', or 'epoch 3' when a time budget, not an epoch count, ends the run."""
    return f"epoch {epoch + 1}" + (f"/{end_epoch}" if not run.budgeted else "")


def _epoch_line(epoch: int, end_epoch: int, record: dict[str, float], run: RunClock) -> str:
    terms = {k: v for k, v in record.items() if k.startswith(("heatmap_", "push_", "pull_")) or k == "grouped"}
    where = _epoch_label(epoch, end_epoch, run)
    if "epoch_fraction" in record:
        where += f" ({record['epoch_fraction']:.0%}, budget spent)"
    val = f" val AP {record['val_AP']:.4f}" if "val_AP" in record else ""
    left = f"{fmt_seconds(run.left)} of the budget left" if run.budgeted else f"{fmt_seconds(run.elapsed)} so far"
    return f"{where}: loss {record['loss']:.5f} {fmt_terms(terms)}{val} ({record['images_per_s']:.1f} img/s; {left})"


__all__ = ["TrainResult", "build_datasets", "build_optimizer", "build_training_model", "make_loader", "train"]
