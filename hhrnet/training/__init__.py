"""Training: the official recipe (Adam, multi-stage heatmap + AE loss, MultiStepLR per epoch) on modern PyTorch.

* fp16 autocast + GradScaler (or bf16) on GPU, fp32 on CPU; optional channels_last and SyncBatchNorm.
* DDP through ``torchrun`` (nccl on GPU, gloo on CPU; multi-node via the standard MASTER_ADDR/PORT, RANK,
  WORLD_SIZE, LOCAL_RANK variables) with a DistributedSampler.
* Epoch-based (official) or wall-clock budgeted runs (``train.minutes``): the learning rate follows the run
  fraction, training stops when the budget is spent and a checkpoint is written there.
* One flat checkpoint every epoch, written atomically; ``resume=True`` continues where a run stopped (exactly,
  for epoch-based runs; see :mod:`hhrnet.training.state`).
* A NaN/inf loss stops training with a :class:`~hhrnet.errors.TrainingError` naming the epoch and step; no
  checkpoint is written from non-finite weights.
* Progress, TensorBoard and the epoch summary show the loss terms, the fraction of people the tags group
  correctly (``grouped``) and the ETA of the whole run.
* ``model_best.pth`` is chosen by validation AP when a validation split exists (the official code keeps the
  last epoch, docs/official.md B10); TensorBoard stage tags are per stage (official B11 fixed).

Modules: :mod:`.loop` (``train``), :mod:`.engine` (``train_one_epoch``, ``evaluate``), :mod:`.schedule`,
:mod:`.state` (checkpoints, resume), :mod:`.distributed`, :mod:`.progress`.
"""

from hhrnet.training.engine import EpochStats, StepReport, evaluate, train_one_epoch
from hhrnet.training.loop import TrainResult, build_optimizer, make_loader, train
from hhrnet.training.schedule import RunClock, lr_multiplier
from hhrnet.training.state import TrainState

__all__ = [
    "EpochStats",
    "RunClock",
    "StepReport",
    "TrainResult",
    "TrainState",
    "build_optimizer",
    "evaluate",
    "lr_multiplier",
    "make_loader",
    "train",
    "train_one_epoch",
]
