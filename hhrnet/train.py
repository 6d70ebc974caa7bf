"""Training: the official recipe (Adam, MultiStepLR per epoch, multi-stage heatmap + AE loss) on modern PyTorch.

* fp16 autocast + GradScaler (or bf16) on GPU, fp32 on CPU; optional channels_last and SyncBatchNorm.
* DDP through ``torchrun`` (nccl on GPU, gloo on CPU; multi-node via the standard MASTER_ADDR/PORT,
  RANK, WORLD_SIZE, LOCAL_RANK variables) with a DistributedSampler.
* One flat checkpoint every epoch, written atomically (model, optimizer, scheduler, scaler, epoch, config,
  RNG states, best AP, history); ``resume=True`` continues exactly where an interrupted run stopped.
* A NaN/inf loss stops training with a :class:`~hhrnet.errors.TrainingError` naming the epoch and step;
  no checkpoint is written from non-finite weights.
* ``model_best.pth`` is chosen by validation AP when a validation split exists (the official code keeps
  the last epoch, SPEC B10); TensorBoard stage tags are per stage (official B11 fixed).
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

from hhrnet.checkpoint import load_pretrained, make_payload, read_checkpoint, save_checkpoint
from hhrnet.config import Config
from hhrnet.errors import CheckpointError, TrainingError
from hhrnet.losses import HigherHRNetLoss
from hhrnet.model import build_model

CHECKPOINT = "checkpoint.pth"
BEST = "model_best.pth"
FINAL = "model_final.pth"

Log = Callable[[str], None]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class TrainResult:
    output_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    best_ap: float | None
    best_epoch: int | None
    epochs_run: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    model: nn.Module | None = None  # the trained network (unwrapped), on its training device


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return info


def pick_device(requested: str | None, dist_info: DistInfo | None = None) -> torch.device:
    if requested in (None, "auto"):
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError("--device cuda was requested but torch sees no CUDA GPU")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device(requested if ":" in requested else f"cuda:{local}")
    return torch.device(requested)


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
# building blocks
# --------------------------------------------------------------------------------------------


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    wd = t.wd if t.apply_weight_decay else 0.0
    if t.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=wd)  # official: lr only
    return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=wd, nesterov=t.nesterov)


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.MultiStepLR:
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(cfg.train.lr_step), gamma=cfg.train.lr_factor
    )


def _scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    state = scheduler.state_dict()
    if isinstance(state.get("milestones"), Counter):  # Counter is not weights_only-loadable
        state["milestones"] = dict(state["milestones"])
    return state


def _load_scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict[str, Any]) -> None:
    state = dict(state)
    if isinstance(state.get("milestones"), dict):
        state["milestones"] = Counter(state["milestones"])
    scheduler.load_state_dict(state)


def _autocast(device: torch.device, amp: str) -> Any:
    if device.type != "cuda" or amp == "none":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


def _to(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return {
        "image": batch["image"].to(device, non_blocking=True, memory_format=fmt),
        "heatmaps": [t.to(device, non_blocking=True) for t in batch["heatmaps"]],
        "masks": [t.to(device, non_blocking=True) for t in batch["masks"]],
        "joints": [t.to(device, non_blocking=True) for t in batch["joints"]],
    }


def _loader(
    cfg: Config, dataset: Any, epoch: int, dist_info: DistInfo, collate: Callable[..., Any], shuffle: bool
) -> DataLoader:
    """A loader whose order depends only on (seed, epoch): resuming at epoch k replays epoch k exactly."""
    if dist_info.enabled:
        sampler: Any = DistributedSampler(
            dataset, num_replicas=dist_info.world_size, rank=dist_info.rank, shuffle=shuffle, seed=cfg.train.seed
        )
        sampler.set_epoch(epoch)
    elif shuffle:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(cfg.train.seed * 1000 + epoch))
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(
        dataset,
        batch_size=cfg.train.images_per_gpu,
        sampler=sampler,
        num_workers=cfg.train.workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
        drop_last=len(dataset) >= cfg.train.images_per_gpu * dist_info.world_size,
        persistent_workers=False,
    )


def _quiet() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or not sys.stdout.isatty()


@dataclass
class _EpochStats:
    loss: float = 0.0
    terms: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    images: int = 0
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)


def train_one_epoch(
    model: nn.Module,
    criterion: HigherHRNetLoss,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    loader: DataLoader,
    *,
    epoch: int,
    device: torch.device,
    amp: str,
    channels_last: bool,
    print_freq: int,
    max_steps: int | None = None,
    log: Log | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    writer: Any = None,
    global_step: int = 0,
) -> _EpochStats:
    """One pass over ``loader``. Host synchronisation happens only every ``print_freq`` steps on GPU
    (the NaN check reads an accumulated device flag); on CPU the per-step check costs nothing."""
    model.train()
    stats = _EpochStats()
    sums: dict[str, torch.Tensor] = {}
    bad = torch.zeros((), dtype=torch.bool, device=device)
    window_start = 0
    start = time.perf_counter()
    total = len(loader) if max_steps is None else min(len(loader), max_steps)
    for step, batch in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        stats.skipped.extend(batch.get("skipped", ()))
        b = _to(batch, device, channels_last)
        with _autocast(device, amp):
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
        stats.steps += 1
        stats.images += int(b["image"].shape[0])
        last = step + 1 == total
        if (step + 1) % print_freq == 0 or last:
            if bool(bad):  # one host sync per window on GPU
                raise TrainingError(
                    f"loss became non-finite at epoch {epoch}, between steps {window_start} and {step}: "
                    "training stopped"
                )
            window_start = step + 1
            means = {k: float(v) / stats.steps for k, v in sums.items()}
            elapsed = time.perf_counter() - start
            rate = stats.images / max(elapsed, 1e-9)
            lr = optimizer.param_groups[0]["lr"]
            if writer is not None:
                for k, v in means.items():
                    writer.add_scalar(f"train/{k}", v, global_step + step)
                writer.add_scalar("train/lr", lr, global_step + step)
                writer.add_scalar("train/images_per_s", rate, global_step + step)
            if log is not None:
                eta = (total - step - 1) * elapsed / (step + 1)
                shown = " ".join(f"{k}={v:.3g}" for k, v in means.items())
                log(f"epoch {epoch} step {step + 1}/{total} {shown} lr={lr:.2e} {rate:.1f} img/s eta {eta:.0f}s")
        if on_step is not None:
            on_step(step + 1, total, float(loss.detach()) if device.type == "cpu" else float("nan"))
    stats.seconds = time.perf_counter() - start
    stats.terms = {k: float(v) / max(stats.steps, 1) for k, v in sums.items()}
    stats.loss = stats.terms.get("total", float("nan"))
    return stats


def validate(
    model: nn.Module, cfg: Config, image_dir: Path, ann_file: Path, *, device: torch.device, max_images: int | None
) -> dict[str, float]:
    """COCO-style AP of ``model`` on the validation split (official test pipeline, fast decoder)."""
    from hhrnet.evaluate import evaluate_model
    from hhrnet.inference import torch_network

    net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    network = torch_network(net, device=str(device))
    was_training = net.training
    try:
        result = evaluate_model(network, cfg, image_dir, ann_file, max_images=max_images)
    finally:
        net.train(was_training)
    return dict(result.stats)


def _all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


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
) -> TrainResult:
    """Train ``cfg`` and return where the checkpoints are and what validation AP they reached."""
    from hhrnet.data.coco import build_dataset, collate, find_split_files

    dev = pick_device(device)
    dist_info = init_distributed(dev)
    out = Path(output_dir if output_dir is not None else cfg.train.output_dir)
    if dist_info.main:
        out.mkdir(parents=True, exist_ok=True)
    root = Path(data_root) if data_root is not None else Path(cfg.data.root)
    t = cfg.train
    end_epoch = epochs if epochs is not None else t.end_epoch
    quiet = _quiet() if progress is None else not progress
    say: Log = log if log is not None else (print if dist_info.main else (lambda _m: None))
    if dev.type != "cuda" and t.amp != "none":
        say(f"note: train.amp={t.amp} needs a CUDA GPU; training in fp32 on {dev.type}")
    amp = t.amp if dev.type == "cuda" else "none"
    seed_everything(t.seed + dist_info.rank)

    dataset = build_dataset(cfg, "train", root=root, seed=t.seed)
    val_files: tuple[Path, Path] | None = None
    if t.val_every > 0:
        try:
            val_files = find_split_files(root, cfg.data.test_split)
        except Exception:  # noqa: BLE001 - no validation split: best = last, said below
            val_files = None
    if val_files is None and t.val_every > 0:
        say("no validation split found: model_best.pth will be the last epoch")

    model = build_model(cfg)
    if cfg.model.init_weights and cfg.model.pretrained:
        pretrained = Path(cfg.model.pretrained)
        if not pretrained.is_file():
            raise CheckpointError(
                f"pretrained weights {pretrained} not found (set model.pretrained='' to train from scratch)"
            )
        loaded = load_pretrained(model, pretrained, cfg.model.pretrained_layers)
        say(f"initialised {len(loaded)} tensors from {pretrained}")
    model.to(dev)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from the stubs
    if cfg.model.sync_bn:
        if dev.type != "cuda" or not dist_info.enabled:
            say("note: model.sync_bn needs CUDA DDP; using ordinary BatchNorm")
        else:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    criterion = HigherHRNetLoss(cfg.loss, cfg.model.num_joints).to(dev)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    start_epoch, best_ap, best_epoch = t.begin_epoch, None, None
    history: list[dict[str, float]] = []
    ckpt_path = out / CHECKPOINT
    resume_from: Path | None = None
    if isinstance(resume, str | Path) and str(resume):
        resume_from = Path(resume)
    elif resume is True and t.auto_resume and ckpt_path.is_file():
        resume_from = ckpt_path
    if resume_from is not None:
        state, meta = read_checkpoint(resume_from)
        model.load_state_dict(state)
        for key in ("optimizer", "scheduler", "epoch"):
            if key not in meta:
                raise CheckpointError(f"{resume_from} is not a training checkpoint (no {key}); cannot resume")
        optimizer.load_state_dict(meta["optimizer"])
        _load_scheduler_state(scheduler, meta["scheduler"])
        if scaler is not None and meta.get("scaler"):
            scaler.load_state_dict(meta["scaler"])
        start_epoch = int(meta["epoch"])
        best_ap, best_epoch = meta.get("best_ap"), meta.get("best_epoch")
        history = list(meta.get("history", []))
        if "rng" in meta:
            set_rng_state(meta["rng"])
        say(f"resumed from {resume_from} at epoch {start_epoch}")

    net: nn.Module = model
    if dist_info.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None, broadcast_buffers=True
        )

    writer = None
    if dist_info.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(out / "tensorboard"))

    started = time.perf_counter()
    epochs_run = 0
    try:
        with _progress(quiet or not dist_info.main) as bar:
            for epoch in range(start_epoch, end_epoch):
                dataset.set_epoch(epoch)
                loader = _loader(cfg, dataset, epoch, dist_info, collate, shuffle=t.shuffle)
                steps = len(loader) if max_steps_per_epoch is None else min(len(loader), max_steps_per_epoch)
                task = bar.start(f"epoch {epoch + 1}/{end_epoch}", steps)

                def on_step(done: int, total: int, loss: float, task: int = task) -> None:
                    bar.update(task, done, loss)

                stats = train_one_epoch(
                    net, criterion, optimizer, scaler, loader, epoch=epoch, device=dev, amp=amp,
                    channels_last=t.channels_last, print_freq=t.print_freq, max_steps=max_steps_per_epoch,
                    log=say if quiet else None, on_step=on_step,
                    writer=writer, global_step=epoch * max(steps, 1),
                )  # fmt: skip
                scheduler.step()
                epochs_run += 1
                if stats.skipped:
                    say(f"epoch {epoch}: skipped {len(stats.skipped)} unreadable samples: {stats.skipped[:3]}")
                record: dict[str, float] = {"epoch": float(epoch + 1), "loss": stats.loss,
                                            "images_per_s": stats.images / max(stats.seconds, 1e-9)}  # fmt: skip
                is_best = val_files is None
                if val_files is not None and ((epoch + 1) % t.val_every == 0 or epoch + 1 == end_epoch):
                    if dist_info.main:
                        ann_file, image_dir = val_files
                        ap = validate(net, cfg, image_dir, ann_file, device=dev, max_images=val_max_images)
                        record["val_AP"] = ap.get("AP", float("nan"))
                        if writer is not None:
                            writer.add_scalar("val/AP", record["val_AP"], epoch + 1)
                        if best_ap is None or record["val_AP"] > best_ap:
                            best_ap, best_epoch, is_best = record["val_AP"], epoch + 1, True
                    if dist_info.enabled:
                        dist.barrier()
                history.append(record)
                if dist_info.main:
                    if not _all_finite(model):
                        raise TrainingError(f"weights became non-finite in epoch {epoch}; checkpoint not written")
                    payload = make_payload(
                        model, cfg, optimizer=optimizer.state_dict(), scheduler=_scheduler_state(scheduler),
                        scaler=scaler.state_dict() if scaler is not None else None, epoch=epoch + 1,
                        rng=rng_state(), best_ap=best_ap, best_epoch=best_epoch, history=history,
                    )  # fmt: skip
                    save_checkpoint(ckpt_path, payload)
                    if is_best:
                        save_checkpoint(out / BEST, make_payload(model, cfg, epoch=epoch + 1, val_ap=best_ap))
                    shown = f" val AP {record['val_AP']:.4f}" if "val_AP" in record else ""
                    say(f"epoch {epoch + 1}/{end_epoch}: loss {stats.loss:.5f}{shown} "
                        f"({record['images_per_s']:.1f} img/s)")  # fmt: skip
                if dist_info.enabled:
                    dist.barrier()
        if dist_info.main:
            save_checkpoint(out / FINAL, make_payload(model, cfg, epoch=start_epoch + epochs_run))
    finally:
        if writer is not None:
            writer.close()
        if dist_info.enabled and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    best_path = out / BEST
    return TrainResult(
        output_dir=out,
        last_checkpoint=ckpt_path,
        best_checkpoint=best_path if best_path.is_file() else None,
        best_ap=best_ap,
        best_epoch=best_epoch,
        epochs_run=epochs_run,
        seconds=time.perf_counter() - started,
        history=history,
        model=model,
    )


class _Bar:
    """Rich progress bar, or nothing when quiet (CI / not a TTY): then log lines carry the progress."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress: Any = None

    def __enter__(self) -> _Bar:
        if not self.quiet:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
            )  # fmt: skip
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def start(self, description: str, total: int) -> int:
        if self.progress is None:
            return -1
        return int(self.progress.add_task(description, total=total, info=""))

    def update(self, task: int, completed: int, loss: float) -> None:
        if self.progress is not None and task >= 0:
            info = "" if math.isnan(loss) else f"loss {loss:.4g}"
            self.progress.update(task, completed=completed, info=info)  # type: ignore[arg-type]


def _progress(quiet: bool) -> _Bar:
    return _Bar(quiet)
