"""Host aggregation without torch, equal to :func:`hhrnet.aggregate.aggregate` (torch) bit for bit.

The official test pipeline resizes every map with ``F.interpolate(mode="bilinear", align_corners=False)``
(docs/official.md §7.3); the decoder's argmax, rounding and thresholds then turn any last-bit difference in the maps
into different joints (a 2.9e-6 difference moved a refined joint 19.9 px on a real COCO image). So the
resize here reproduces torch's CPU kernel (``upsample_generic_Nd_kernel_impl`` with ``HelperInterpLinear``)
in its own float32 arithmetic, which its x86-64 and aarch64 builds compile with fused multiply-adds:

* per axis: ``scale = in / out`` (float32), ``src = fma(scale, dst + 0.5, -0.5)`` clamped at 0,
  ``i0 = min(floor(src), in - 1)``, ``i1 = i0 + (i0 < in - 1)``, ``l1 = clamp(src - i0, 0, 1)``, ``l0 = 1 - l1``;
* per output: ``t0 = fma(x[i0, j0], lw0, x[i0, j1] * lw1)``, ``t1`` likewise for row ``i1``, then
  ``out = fma(t0, lh0, t1 * lh1)``.

The everything-else of aggregation (stage mean, flip merge, scale mean) is float32 add/divide, which NumPy
and torch round identically. Tested against torch: identical on every map size the pipeline produces.
One exception, documented and tested as such: for outputs with H + W <= 128 torch switches to its
channels-last vectorised kernel, whose rounding differs in the last bit; maps that small come only from
inputs under ~128 pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic

TORCH_CHANNELS_LAST_LIMIT = 128  # torch resizes outputs with H + W <= this with another kernel


@intrinsic
def _fma32(typingctx, a, b, c):  # type: ignore[no-untyped-def]  # numba intrinsic
    """a * b + c rounded once (float32), as the compiled torch kernel computes it."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        f32 = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32, f32, f32]))
        return builder.call(fn, args)

    return sig, codegen


fma32: Any = _fma32  # called from jitted code only; typed loosely for mypy


@njit(cache=True)
def axis_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices i0, i1 (out,) int64 and weights l0, l1 (out,) f32 of one axis (align_corners=False)."""
    scale = np.float32(in_size) / np.float32(out_size)
    i0 = np.empty(out_size, np.int64)
    i1 = np.empty(out_size, np.int64)
    l0 = np.empty(out_size, np.float32)
    l1 = np.empty(out_size, np.float32)
    half = np.float32(0.5)
    for o in range(out_size):
        src = fma32(scale, np.float32(o) + half, -half)
        if src < np.float32(0.0):
            src = np.float32(0.0)
        k = int(np.floor(src))
        if k > in_size - 1:
            k = in_size - 1
        lam = src - np.float32(k)
        lam = min(max(lam, np.float32(0.0)), np.float32(1.0))
        i0[o] = k
        i1[o] = k + 1 if k < in_size - 1 else k
        l1[o] = lam
        l0[o] = np.float32(1.0) - lam
    return i0, i1, l0, l1


@njit(cache=True)
def resize_plane(x: np.ndarray, out: np.ndarray, hi: tuple, wi: tuple) -> None:  # type: ignore[type-arg]
    """x (h, w) f32 -> out (H, W) f32 with the per-axis tables of :func:`axis_weights`."""
    hi0, hi1, hl0, hl1 = hi
    wi0, wi1, wl0, wl1 = wi
    for oy in range(out.shape[0]):
        r0 = x[hi0[oy]]
        r1 = x[hi1[oy]]
        a0 = hl0[oy]
        a1 = hl1[oy]
        for ox in range(out.shape[1]):
            j0 = wi0[ox]
            j1 = wi1[ox]
            b0 = wl0[ox]
            b1 = wl1[ox]
            t0 = fma32(r0[j0], b0, r0[j1] * b1)
            t1 = fma32(r1[j0], b0, r1[j1] * b1)
            out[oy, ox] = fma32(t0, a0, t1 * a1)


@njit(parallel=True)  # never cache a parallel kernel (STYLE)
def _resize_planes(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """x (N, h, w) f32 -> (N, H, W) f32, planes in parallel."""
    hi = axis_weights(x.shape[1], out_h)
    wi = axis_weights(x.shape[2], out_w)
    out = np.empty((x.shape[0], out_h, out_w), np.float32)
    for n in prange(x.shape[0]):
        resize_plane(x[n], out[n], hi, wi)
    return out


def resize_maps(x: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """(B, C, h, w) f32 -> (B, C, H, W) with size = (H, W): torch's bilinear ``interpolate``, align_corners=False."""
    b, c, h, w = x.shape
    out_h, out_w = int(size[0]), int(size[1])
    if (h, w) == (out_h, out_w):
        return x
    planes = np.ascontiguousarray(x, dtype=np.float32).reshape(b * c, h, w)
    return _resize_planes(planes, out_h, out_w).reshape(b, c, out_h, out_w)


def tag_maps(out: Any, num_joints: int, tag_dim: int, flip_index: Sequence[int] | None) -> list[Any]:
    """The tag maps of one stage's output ``out`` (B, J + D * (J or 1), h, w), a NumPy array or a torch tensor
    (the torch aggregation shares this): one (B, J or 1, h, w) map per tag value, a flipped pass's per-joint
    channels permuted by ``flip_index``."""
    group = (out.shape[1] - num_joints) // tag_dim  # J or 1 channels per tag value
    maps = []
    for d in range(tag_dim):
        tag = out[:, num_joints + d * group : num_joints + (d + 1) * group]
        if flip_index is not None and group == num_joints:
            tag = tag[:, list(flip_index)]
        maps.append(tag)
    return maps


def _stages(
    outputs: Sequence[np.ndarray],
    num_joints: int,
    with_heatmaps: Sequence[bool],
    with_ae: Sequence[bool],
    flip_index: Sequence[int] | None,
    tag_dim: int = 1,
) -> tuple[np.ndarray, list[np.ndarray]]:
    size = (outputs[-1].shape[2], outputs[-1].shape[3])
    total: np.ndarray | None = None
    count = 0
    tags: list[np.ndarray] = []
    for i, out in enumerate(outputs):
        out = resize_maps(out.astype(np.float32, copy=False), size)  # (B, C_i, H/2, W/2)
        if flip_index is not None:
            out = out[:, :, :, ::-1]
        if with_heatmaps[i]:
            hm = out[:, :num_joints]  # (B, J, H/2, W/2)
            if flip_index is not None:
                hm = hm[:, list(flip_index)]
            total = hm if total is None else total + hm
            count += 1
        if with_ae[i]:
            tags += tag_maps(out, num_joints, tag_dim, flip_index)
    if total is None:
        raise ValueError("at least one stage must provide heatmaps")
    return total / np.float32(count), tags


def aggregate(
    outputs: Sequence[np.ndarray],
    flip_outputs: Sequence[np.ndarray] | None = None,
    *,
    num_joints: int,
    flip_index: Sequence[int],
    with_heatmaps: Sequence[bool] = (True, True),
    with_ae: Sequence[bool] = (True, False),
    project_to: tuple[int, int] | None = None,
    tag_dim: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """One scale -> heatmaps (B, J, H', W') f32 and tags (B, J, H', W', T) f32; ``project_to`` is (H, W)."""
    heatmaps, tags = _stages(outputs, num_joints, with_heatmaps, with_ae, None, tag_dim)
    maps = [heatmaps]
    if flip_outputs is not None:
        hm_flip, tags_flip = _stages(flip_outputs, num_joints, with_heatmaps, with_ae, flip_index, tag_dim)
        maps.append(hm_flip)
        tags = tags + tags_flip
    if project_to is not None:
        maps = [resize_maps(m, project_to) for m in maps]
        tags = [resize_maps(t, project_to) for t in tags]
    final = (maps[0] + maps[1]) / np.float32(2.0) if len(maps) == 2 else maps[0]
    return np.ascontiguousarray(final, dtype=np.float32), np.ascontiguousarray(np.stack(tags, axis=4), np.float32)


def combine_scales(per_scale: Sequence[np.ndarray], tags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps at one size from every scale -> their mean (official: summed, then divided); tags unchanged."""
    total = per_scale[0]
    for hm in per_scale[1:]:
        total = total + hm
    return total / np.float32(len(per_scale)), tags
