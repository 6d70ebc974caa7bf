"""Training targets (the codec's *encode* side): heatmaps and the packed joints layout of the tag loss.

Official semantics (docs/official.md §4), reproduced exactly:

* heatmaps: an unnormalised Gaussian kernel of size ``6σ+3`` centred at ``3σ+1`` (peak 1.0) is pasted at the
  *truncated* joint position ``(int(x), int(y))``; joints with ``v == 0`` or outside ``[0, R)`` after
  truncation are skipped (so ``x ∈ (-1, 0)`` counts as 0, docs/official.md B8); overlaps combine with ``max``; float32.
  With scale-aware sigma each person uses its own σ from ``joints[p, 0, 3]``.
* packed joints: for person ``p`` the visible in-bounds joints are packed into slots ``0..k-1`` as
  ``(j*R*R + y*R + x, 1)`` (``y*R + x`` without ``tag_per_joint``); shape (MAXP, J, 2).

The official generators loop over people and joints in Python (docs/official.md S6). Here the per-joint bookkeeping is
vectorised in NumPy and the paste is one small Numba kernel; the kernel values come from the same NumPy
expression as the official one, so outputs are bit-identical.

More than ``max_people`` people (docs/official.md B7): the official ``JointsGenerator`` raises IndexError when a person
beyond the 30th has a visible in-bounds joint. ``overflow="compact"`` (default) keeps the official layout
whenever the official code would succeed; otherwise it drops the people without any visible in-bounds joint
(their rows are all zero anyway) and keeps the first ``max_people`` of the rest in annotation order. Heatmaps
always include everyone. ``overflow="raise"`` turns the official crash into an :class:`InputError`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np

from hhrnet.errors import InputError

Overflow = Literal["compact", "raise"]


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Official unnormalised Gaussian: (K, K) float64 with K = len(arange(0, 6σ+3)), centre 3σ+1, peak 1."""
    size = 6 * sigma + 3
    xs = np.arange(0.0, size, 1.0, dtype=np.float64)
    ys = xs[:, np.newaxis]
    mid = 3 * sigma + 1
    return np.exp(-((xs - mid) ** 2 + (ys - mid) ** 2) / (2 * sigma**2))


@numba.njit(cache=True, nogil=True)
def _paste_max(
    heatmaps: np.ndarray,  # (J, R, R) float32, updated in place
    kernels: np.ndarray,  # (K, S, S) float32
    kernel_id: np.ndarray,  # (N,) int64
    channel: np.ndarray,  # (N,) int64
    left: np.ndarray,  # (N,) int64 window [left, right) x [top, bottom) in map pixels
    top: np.ndarray,
    right: np.ndarray,
    bottom: np.ndarray,
) -> None:
    size = heatmaps.shape[1]
    for n in range(channel.shape[0]):
        kernel = kernels[kernel_id[n]]
        j = channel[n]
        x0, x1 = max(left[n], 0), min(right[n], size)
        y0, y1 = max(top[n], 0), min(bottom[n], size)
        for yy in range(y0, y1):
            row = kernel[yy - top[n]]
            for xx in range(x0, x1):
                v = row[xx - left[n]]
                if v > heatmaps[j, yy, xx]:
                    heatmaps[j, yy, xx] = v


@dataclass(frozen=True)
class _Visible:
    """The joints the official generators use: visible (v > 0) and inside [0, R) after int() truncation."""

    valid: np.ndarray  # (P, J) bool
    person: np.ndarray  # (N,) int64 person of each used joint (row-major order)
    joint: np.ndarray  # (N,) int64
    x: np.ndarray  # (N,) int64 truncated map column
    y: np.ndarray  # (N,) int64 truncated map row


def _visible(joints: np.ndarray, output_size: int) -> _Visible:
    x, y = joints[..., 0], joints[..., 1]
    # int() truncates toward zero, so int(x) in [0, R) <=> -1 < x < R (NaN compares false: skipped)
    valid = (joints[..., 2] > 0) & (x > -1) & (x < output_size) & (y > -1) & (y < output_size)
    person, joint = np.nonzero(valid)
    return _Visible(valid, person, joint, x[person, joint].astype(np.int64), y[person, joint].astype(np.int64))


@functools.lru_cache(maxsize=64)
def _kernel32(sigma: float) -> np.ndarray:
    kernel = gaussian_kernel(sigma).astype(np.float32)  # max then cast == cast then max
    kernel.flags.writeable = False
    return kernel


def _render(vis: _Visible, sigmas: np.ndarray, num_joints: int, output_size: int) -> np.ndarray:
    """Heatmaps (J, R, R) from the used joints; ``sigmas`` (P,) is each person's sigma."""
    heatmaps = np.zeros((num_joints, output_size, output_size), dtype=np.float32)  # (J, R, R)
    if vis.person.size == 0:
        return heatmaps
    distinct, person_kernel = np.unique(sigmas, return_inverse=True)
    if distinct.size == 1:
        kernels = _kernel32(float(distinct[0]))[None]  # (1, S, S)
    else:
        pieces = [_kernel32(float(s)) for s in distinct]
        side = max(k.shape[0] for k in pieces)
        kernels = np.zeros((len(pieces), side, side), dtype=np.float32)  # (K, S, S)
        for i, k in enumerate(pieces):
            kernels[i, : k.shape[0], : k.shape[1]] = k
    s = sigmas[vis.person]
    xf, yf = vis.x.astype(np.float64), vis.y.astype(np.float64)
    # window bounds exactly as the official code computes them (float64, then round half to even)
    left = np.round(xf - 3 * s - 1).astype(np.int64)
    top = np.round(yf - 3 * s - 1).astype(np.int64)
    right = np.round(xf + 3 * s + 2).astype(np.int64)
    bottom = np.round(yf + 3 * s + 2).astype(np.int64)
    kernel_id = person_kernel.reshape(-1)[vis.person].astype(np.int64)
    _paste_max(heatmaps, kernels, kernel_id, vis.joint, left, top, right, bottom)
    return heatmaps


def _person_sigmas(joints: np.ndarray, sigma: float, scale_aware_sigma: bool) -> np.ndarray:
    if not scale_aware_sigma:
        return np.full(joints.shape[0], float(sigma))
    if joints.shape[-1] < 4:
        raise ValueError("scale_aware_sigma needs joints with a 4th (sigma) column")
    return np.ascontiguousarray(joints[:, 0, 3], dtype=np.float64)  # (P,) official: first joint's sigma


def render_heatmaps(
    joints: np.ndarray,
    output_size: int,
    sigma: float = 2.0,
    *,
    scale_aware_sigma: bool = False,
    num_joints: int | None = None,
) -> np.ndarray:
    """Heatmaps (J, R, R) float32 for ``joints`` (P, J, C) in map pixels, C = 3 ``[x, y, v]`` (or 4 with σ).

    With ``scale_aware_sigma`` person p uses σ = ``joints[p, 0, 3]`` (official ScaleAwareHeatmapGenerator).
    """
    joints = np.asarray(joints, dtype=np.float64)
    num_joints = joints.shape[1] if num_joints is None else num_joints
    vis = _visible(joints, int(output_size))
    return _render(vis, _person_sigmas(joints, sigma, scale_aware_sigma), num_joints, int(output_size))


def _pack(
    vis: _Visible,
    num_joints: int,
    output_size: int,
    max_people: int,
    tag_per_joint: bool,
    overflow: Overflow,
    dtype: type[np.signedinteger] | np.dtype,
) -> np.ndarray:
    out = np.zeros((max_people, num_joints, 2), dtype=dtype)  # (MAXP, J, 2)
    if vis.person.size == 0:
        return out
    has_joint: np.ndarray = np.asarray(vis.valid.any(axis=1))  # (P,)
    row_of = np.arange(has_joint.size)
    if np.any(has_joint[max_people:]):
        if overflow == "raise":
            first = int(np.nonzero(has_joint[max_people:])[0][0]) + max_people
            raise InputError(
                f"{has_joint.size} people in one image exceed max_num_people={max_people}: person {first} "
                "has a visible joint and no slot (the official JointsGenerator raises IndexError here, "
                "docs/official.md B7)"
            )
        keep = np.nonzero(has_joint)[0][:max_people]  # compact: people with joints, first MAXP in order
        row_of = np.full(has_joint.size, -1)
        row_of[keep] = np.arange(keep.size)
    slot = (np.cumsum(vis.valid, axis=1) - 1)[vis.person, vis.joint]  # packed slot within the person
    row = row_of[vis.person]
    flat = vis.y * output_size + vis.x
    if tag_per_joint:
        flat = flat + vis.joint * output_size * output_size
    sel = (row >= 0) & (row < max_people)
    out[row[sel], slot[sel], 0] = flat[sel]
    out[row[sel], slot[sel], 1] = 1
    return out


def pack_joints(
    joints: np.ndarray,
    output_size: int,
    max_people: int = 30,
    *,
    tag_per_joint: bool = True,
    overflow: Overflow = "compact",
    num_joints: int | None = None,
    dtype: type[np.signedinteger] | np.dtype = np.int64,
) -> np.ndarray:
    """Packed tag-loss layout (MAXP, J, 2): per person, ``(flat index, 1)`` of its visible in-bounds joints.

    See the module docstring for ``overflow`` (docs/official.md B7).
    """
    joints = np.asarray(joints, dtype=np.float64)
    num_joints = joints.shape[1] if num_joints is None else num_joints
    vis = _visible(joints, int(output_size))
    return _pack(vis, num_joints, int(output_size), max_people, tag_per_joint, overflow, dtype)


def unpack_joints(packed: np.ndarray, output_size: int, num_joints: int) -> np.ndarray:
    """Inverse of :func:`pack_joints` (``tag_per_joint``): (MAXP, J, 2) -> (MAXP, J, 3) ``[x, y, v]`` integers."""
    packed = np.asarray(packed)
    r = int(output_size)
    out = np.zeros((packed.shape[0], num_joints, 3), dtype=np.float64)
    p_idx, slot = np.nonzero(packed[..., 1] > 0)
    flat = packed[p_idx, slot, 0].astype(np.int64)
    j, rest = np.divmod(flat, r * r)
    y, x = np.divmod(rest, r)
    out[p_idx, j] = np.stack([x, y, np.ones_like(x)], axis=-1)
    return out


def encode(
    joints: np.ndarray,
    output_size: int,
    *,
    sigma: float = 2.0,
    max_people: int = 30,
    scale_aware_sigma: bool = False,
    tag_per_joint: bool = True,
    overflow: Overflow = "compact",
    num_joints: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (J, R, R) float32 and packed joints (MAXP, J, 2) int64 for ``joints`` (P, J, C) at size R."""
    joints = np.asarray(joints, dtype=np.float64)
    num_joints = joints.shape[1] if num_joints is None else num_joints
    r = int(output_size)
    vis = _visible(joints, r)
    heatmaps = _render(vis, _person_sigmas(joints, sigma, scale_aware_sigma), num_joints, r)
    packed = _pack(vis, num_joints, r, max_people, tag_per_joint, overflow, np.int64)
    return heatmaps, packed


@dataclass(frozen=True)
class TargetEncoder:
    """Targets for every output size of the network (one call per training sample)."""

    num_joints: int
    output_sizes: tuple[int, ...] = (128, 256)
    sigma: float = 2.0
    max_people: int = 30
    scale_aware_sigma: bool = False
    tag_per_joint: bool = True
    overflow: Overflow = "compact"

    def __call__(self, joints_per_size: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``joints_per_size[i]`` (P, J, C) in the coordinates of ``output_sizes[i]``."""
        if len(joints_per_size) != len(self.output_sizes):
            raise ValueError(f"got joints for {len(joints_per_size)} sizes, expected {len(self.output_sizes)}")
        heatmaps, packed = [], []
        for joints, r in zip(joints_per_size, self.output_sizes, strict=True):
            hm, pk = encode(
                joints,
                r,
                sigma=self.sigma,
                max_people=self.max_people,
                scale_aware_sigma=self.scale_aware_sigma,
                tag_per_joint=self.tag_per_joint,
                overflow=self.overflow,
                num_joints=self.num_joints,
            )
            heatmaps.append(hm)
            packed.append(pk)
        return heatmaps, packed


def warmup() -> None:
    """Compile the Numba kernel now (it is cached on disk after the first process)."""
    render_heatmaps(np.array([[[1.0, 1.0, 1.0]]]), 4)


__all__ = [
    "Overflow",
    "TargetEncoder",
    "encode",
    "gaussian_kernel",
    "pack_joints",
    "render_heatmaps",
    "unpack_joints",
    "warmup",
]
