"""Formula weights of the official golden forward files (see tests/data/golden/README.md)."""

from __future__ import annotations

import torch
from torch import nn


def fill_formula_weights(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    new = {}
    for key in sorted(state):
        t = state[key]
        if not t.is_floating_point():
            new[key] = t
            continue
        if key.endswith("running_var"):
            v = torch.rand(t.shape, generator=g, dtype=torch.float64) * 0.5 + 0.5
        elif key.endswith(".weight") and t.dim() == 1:
            v = torch.rand(t.shape, generator=g, dtype=torch.float64) * 0.5 + 0.25
        elif key.startswith("tag_position."):  # not official: a trained position term is ~0.1 tag units per map
            # pixel; the generic scale below (0.7) would make every tag unique, every candidate a person
            v = torch.randn(t.shape, generator=g, dtype=torch.float64) * 0.02
        elif key.endswith("running_mean") or key.endswith(".bias"):
            v = torch.randn(t.shape, generator=g, dtype=torch.float64) * 0.1
        else:
            v = torch.randn(t.shape, generator=g, dtype=torch.float64) * (1 / t[0].numel()) ** 0.5
        new[key] = v.float()
    model.load_state_dict(new)
