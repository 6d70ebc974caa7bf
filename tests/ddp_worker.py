"""Run by torchrun in test_train.py: train with DDP (gloo), then every rank dumps its own live parameters.

Only parameters are compared: BatchNorm running statistics are per rank under DDP (SyncBatchNorm syncs them).
Learning is measured on one fixed, unaugmented batch (augmented epoch losses are too noisy for a few steps).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from hhrnet.config import apply_overrides, preset
from hhrnet.data.coco import build_dataset, collate
from hhrnet.losses import HigherHRNetLoss
from hhrnet.model import build_model
from hhrnet.training import train

sys.path.insert(0, str(Path(__file__).parent))
from test_train import TOY

root, out = sys.argv[1], Path(sys.argv[2])
cfg = apply_overrides(
    preset("tiny"),
    [
        *TOY,
        "data.input_size=128",
        "data.output_size=[32,64]",
        "train.images_per_gpu=2",
        "train.val_every=0",
        "train.print_freq=100",
        "train.lr=0.005",
        "train.workers=0",
    ],
)
fixed = collate([build_dataset(cfg, "train", root=root, augment=False)[i] for i in range(4)])
criterion = HigherHRNetLoss(cfg.loss, cfg.model.num_joints, cfg.model.tag_dim)


def fixed_loss(model: torch.nn.Module) -> float:
    model.eval()
    with torch.no_grad():
        return float(criterion(model(fixed["image"]), fixed["heatmaps"], fixed["masks"], fixed["joints"])[0])


torch.manual_seed(0)
before = fixed_loss(build_model(cfg))
result = train(cfg, output_dir=out, data_root=root, epochs=6, progress=False, resume=False)
assert result.model is not None
after = fixed_loss(result.model)
torch.save(
    {"params": dict(result.model.named_parameters()), "before": before, "after": after},
    out / f"rank{os.environ['RANK']}.pt",
)
