"""Parameter and multiply-add counts, with the conventions of the official HigherHRNet table.

MACs count convolutions and transposed convolutions only (the official "GFLOPs" column): a Conv2d
costs out_elements * in_channels/groups * kh * kw, and so does a ConvTranspose2d in the official table's
convention (a dense conv over the output grid). That over-counts a stride-2 deconv 4x against its real
scatter cost (in_elements * out_channels * kh * kw): 2.21 G instead of 0.55 G at W32-512. With it,
W32-512 is 47.86 G, W32-640 74.79 G and W48-640 154.31 G, exactly the official numbers. BatchNorm,
ReLU, additions and upsampling are not counted.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, height: int, width: int, batch: int = 1) -> int:
    """Multiply-adds of one forward pass at (batch, 3, height, width), measured with forward hooks."""
    total = 0

    def conv_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def deconv_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.ConvTranspose2d)
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    shadow = copy.deepcopy(model).to("meta").eval()
    handles = []
    for m in shadow.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.ConvTranspose2d):
            handles.append(m.register_forward_hook(deconv_hook))
    try:
        with torch.no_grad():  # meta tensors: shapes flow through without arithmetic or memory
            shadow(torch.zeros(batch, 3, height, width, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return total
