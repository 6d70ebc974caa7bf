"""Image -> poses: the official test pipeline (SPEC §7) around any network callable.

Stages (each callable on its own so a benchmark can time them):

1. preprocess  short side to ``input_size``, long side rounded up to a multiple of 64 (multi-scale: of
               128 at scale 1), official affine warp (``cv2.warpAffine``), ImageNet normalisation;
2. network     ``(B, 3, H, W) f32 -> [out0, out1]`` (torch, ONNX Runtime or TensorRT: see
               :mod:`hhrnet.export.backends`); the flipped image runs in the same batch;
3. aggregate   stages averaged at 1/2 resolution, flip merged (T = 2), projected to the input size
               (NumPy by default, torch on request), scales combined;
4. decode      :mod:`hhrnet.kernels` (fast Numba by default, or the reference);
5. postprocess the inverse affine back to image pixels.

An opt-in ``letterbox`` size pads every image to one fixed square for true batching; it changes results
against the official pipeline (the official one pads only to a multiple of 64) and says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from hhrnet.config import Config
from hhrnet.errors import InputError
from hhrnet.kernels.params import DecodeParams

Network = Callable[[np.ndarray], Sequence[np.ndarray]]
Decoder = Literal["fast", "reference", "cuda"]

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3), read as the official code does; InputError naming the file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"image not found: {p}")
    image = cv2.imread(str(p), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise InputError(f"cannot decode image {p} (corrupt or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------------------------
# official geometry (utils/transforms.py)
# --------------------------------------------------------------------------------------------


def _rotate(point: np.ndarray, rad: float) -> np.ndarray:
    s, c = math.sin(rad), math.cos(rad)
    return np.array([point[0] * c - point[1] * s, point[0] * s + point[1] * c], np.float32)


def _third(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    return b + np.array([-d[1], d[0]], np.float32)


def affine_transform(
    center: np.ndarray, scale: np.ndarray, rotation: float, output_size: Sequence[int], inverse: bool = False
) -> np.ndarray:
    """2x3 matrix mapping the box (center, scale * 200 wide) onto ``output_size`` (w, h) — or back."""
    scale = np.asarray(scale, np.float64)
    if scale.ndim == 0:
        scale = np.array([scale, scale])
    src_w = scale[0] * 200.0
    dst_w, dst_h = float(output_size[0]), float(output_size[1])
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = np.asarray(center, np.float32) + _rotate(np.array([0.0, src_w * -0.5]), math.pi * rotation / 180)
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = np.array([dst_w * 0.5, dst_h * 0.5], np.float32) + np.array([0, dst_w * -0.5], np.float32)
    src[2] = _third(src[0], src[1])
    dst[2] = _third(dst[0], dst[1])
    return cv2.getAffineTransform(dst, src) if inverse else cv2.getAffineTransform(src, dst)


def multi_scale_size(
    width: int, height: int, input_size: int, current_scale: float, min_scale: float
) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """Official ``get_multi_scale_size``: ((w, h) resized, center, scale)."""
    center = np.array([int(width / 2.0 + 0.5), int(height / 2.0 + 0.5)])
    min_input = int((min_scale * input_size + 63) // 64 * 64)
    if width < height:
        w_r = int(min_input * current_scale / min_scale)
        h_r = int(int((min_input / width * height + 63) // 64 * 64) * current_scale / min_scale)
        scale = np.array([width / 200.0, h_r / w_r * width / 200.0])
    else:
        h_r = int(min_input * current_scale / min_scale)
        w_r = int(int((min_input / height * width + 63) // 64 * 64) * current_scale / min_scale)
        scale = np.array([w_r / h_r * height / 200.0, height / 200.0])
    return (w_r, h_r), center, scale


def normalize(image: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> (3, H, W) f32, ImageNet mean/std (as ToTensor + Normalize)."""
    x = image.astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(((x - MEAN) / STD).transpose(2, 0, 1))


def to_image_coords(poses: np.ndarray, center: np.ndarray, scale: np.ndarray, map_size: tuple[int, int]) -> np.ndarray:
    """Official ``get_final_preds``: (P, J, C) map coordinates -> image pixels (x, y only)."""
    out = poses.astype(np.float32, copy=True)
    if len(out) == 0:
        return out
    trans = affine_transform(center, scale, 0, map_size, inverse=True)
    xy = out[..., :2].reshape(-1, 2).astype(np.float64)
    mapped = xy @ trans[:, :2].T + trans[:, 2]
    out[..., :2] = mapped.reshape(out.shape[:-1] + (2,))
    return out


# --------------------------------------------------------------------------------------------
# predictor
# --------------------------------------------------------------------------------------------


@dataclass
class Poses:
    """Poses of one image in image pixels."""

    keypoints: np.ndarray  # (P, J, 3) f32: x, y, heatmap value
    scores: np.ndarray  # (P,) f32 person score (official: mean joint value before refine)

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class Prepared:
    """Network inputs of one image, per scale (largest first), and the geometry to map back."""

    inputs: list[tuple[float, np.ndarray]]  # (scale factor, (3, h, w) f32)
    base_size: tuple[int, int]  # (w, h) the maps are projected to
    center: np.ndarray
    scale: np.ndarray


class Predictor:
    """The official test pipeline around a network callable ``(B, 3, H, W) f32 -> [out0, out1]``."""

    def __init__(
        self,
        network: Network,
        cfg: Config,
        *,
        decoder: Decoder = "fast",
        aggregator: Literal["numpy", "torch"] = "numpy",
        flip: bool | None = None,
        scales: Sequence[float] | None = None,
        letterbox: int | None = None,
    ) -> None:
        self.network = network
        self.cfg = cfg
        self.decoder = decoder
        self.aggregator = aggregator
        self.flip = cfg.test.flip_test if flip is None else flip
        self.scales = tuple(sorted(scales if scales is not None else cfg.test.scale_factor, reverse=True))
        if 1.0 not in self.scales:
            raise InputError("scales must include 1.0 (tags are taken at scale 1)")
        if letterbox is not None and letterbox % 64:
            raise InputError(f"letterbox size must be a multiple of 64, got {letterbox}")
        self.letterbox = letterbox
        self.params = DecodeParams.from_config(cfg)
        self.num_joints = cfg.model.num_joints
        self.flip_index = cfg.data.flip_index
        with_hm = tuple(a and b for a, b in zip(cfg.loss.with_heatmaps_loss, cfg.test.with_heatmaps, strict=True))
        with_ae = tuple(a and b for a, b in zip(cfg.loss.with_ae_loss, cfg.test.with_ae, strict=True))
        self.with_heatmaps, self.with_ae = with_hm, with_ae

    # stage 1
    def preprocess(self, image: np.ndarray) -> Prepared:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        size = self.cfg.data.input_size
        if self.letterbox is not None:
            side = self.letterbox
            center = np.array([int(w / 2.0 + 0.5), int(h / 2.0 + 0.5)])
            scale = np.array([max(w, h) / 200.0, max(w, h) / 200.0])
            trans = affine_transform(center, scale, 0, (side, side))
            warped = cv2.warpAffine(image, trans, (side, side), flags=cv2.INTER_LINEAR)
            return Prepared([(1.0, normalize(warped))], (side, side), center, scale)
        min_scale = min(self.scales)
        base, center, scale = multi_scale_size(w, h, size, 1.0, min_scale)
        inputs = []
        for s in self.scales:
            resized, c, sc = multi_scale_size(w, h, size, s, min_scale)
            trans = affine_transform(c, sc, 0, resized)
            warped = cv2.warpAffine(image, trans, resized, flags=cv2.INTER_LINEAR)
            inputs.append((s, normalize(warped)))
            center, scale = c, sc
        return Prepared(inputs, base, center, scale)

    # stage 2
    def run_network(self, batch: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """One call with the flipped copy appended to the batch; returns (outputs, flipped outputs)."""
        b = batch.shape[0]
        x = np.concatenate([batch, batch[:, :, :, ::-1]], 0) if self.flip else batch
        outs = [np.asarray(o, dtype=np.float32) for o in self.network(np.ascontiguousarray(x))]
        for o in outs:
            if not np.isfinite(o).all():
                raise InputError("the network produced NaN or infinite maps (check the weights / engine)")
        if not self.flip:
            return outs, None
        return [o[:b] for o in outs], [o[b:] for o in outs]

    # stage 3
    def aggregate(
        self, outputs: list[np.ndarray], flipped: list[np.ndarray] | None, project_to: tuple[int, int] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        kwargs: dict[str, Any] = {
            "num_joints": self.num_joints, "flip_index": self.flip_index, "with_heatmaps": self.with_heatmaps,
            "with_ae": self.with_ae, "project_to": project_to,
        }  # fmt: skip
        if self.aggregator == "torch":
            import torch

            from hhrnet.aggregate import aggregate as agg_torch

            hm, tags = agg_torch(
                [torch.from_numpy(o) for o in outputs],
                None if flipped is None else [torch.from_numpy(o) for o in flipped],
                **kwargs,
            )
            return hm.numpy(), tags.numpy()
        from hhrnet.kernels.aggregate import aggregate as agg_np

        return agg_np(outputs, flipped, **kwargs)

    def maps(self, prepared: Prepared) -> tuple[np.ndarray, np.ndarray]:
        """Stages 2-3 for one image: final heatmaps (J, H, W) and tags (J, H, W, T)."""
        project = (prepared.base_size[1], prepared.base_size[0]) if self.cfg.test.project2image else None
        heatmaps: list[np.ndarray] = []
        tags: np.ndarray | None = None
        for s, x in prepared.inputs:
            outs, flipped = self.run_network(x[None])
            hm, tg = self.aggregate(outs, flipped, project)
            if project is None and heatmaps:
                from hhrnet.kernels.aggregate import resize_maps

                hm = resize_maps(hm, heatmaps[0].shape[2:])
            heatmaps.append(hm)
            if s == 1.0:
                tags = tg
        assert tags is not None
        if project is None and tags.shape[2:4] != heatmaps[0].shape[2:]:
            from hhrnet.kernels.aggregate import resize_maps

            tags = np.stack(
                [resize_maps(np.ascontiguousarray(tags[..., t]), heatmaps[0].shape[2:]) for t in range(tags.shape[4])],
                axis=4,
            )
        final = heatmaps[0]
        for hm in heatmaps[1:]:
            final = final + hm
        final = final / np.float32(len(heatmaps))
        return final[0], tags[0]

    # stage 4
    def decode(self, heatmaps: np.ndarray, tags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.decoder == "reference":
            from hhrnet.kernels.reference import decode_reference

            return decode_reference(heatmaps, tags, self.params)
        if self.decoder == "fast":
            from hhrnet.kernels.decode import decode

            return decode(heatmaps, tags, self.params)
        if self.decoder == "cuda":
            from hhrnet.errors import BackendError

            try:
                from numba import cuda

                if not cuda.is_available():
                    raise BackendError("--decoder cuda needs a CUDA GPU (numba.cuda finds none)")
                from hhrnet.kernels.cuda import decode_cuda

                batch = decode_cuda(heatmaps[None], tags[None], self.params, capacity=len(self.params.joint_order) * 30)
            except ImportError as exc:
                raise BackendError(f"--decoder cuda is unavailable: {exc}") from None
            return batch.image(0)
        raise InputError(f"unknown decoder {self.decoder!r}; expected fast, reference or cuda")

    # stage 5
    def postprocess(self, poses: np.ndarray, scores: np.ndarray, prepared: Prepared, map_hw: tuple[int, int]) -> Poses:
        mapped = to_image_coords(poses, prepared.center, prepared.scale, (map_hw[1], map_hw[0]))
        return Poses(keypoints=np.ascontiguousarray(mapped[..., :3]), scores=scores.astype(np.float32))

    def predict(self, image: np.ndarray) -> Poses:
        prepared = self.preprocess(image)
        heatmaps, tags = self.maps(prepared)
        poses, scores = self.decode(heatmaps, tags)
        return self.postprocess(poses, scores, prepared, heatmaps.shape[1:])

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Poses]:
        """Letterbox mode runs the network once for the whole batch; the official mode per image."""
        if self.letterbox is None or len(self.scales) != 1:
            return [self.predict(im) for im in images]
        prepared = [self.preprocess(im) for im in images]
        outs, flipped = self.run_network(np.stack([p.inputs[0][1] for p in prepared]))
        project = (self.letterbox, self.letterbox) if self.cfg.test.project2image else None
        hm, tags = self.aggregate(outs, flipped, project)
        results = []
        for i, p in enumerate(prepared):
            poses, scores = self.decode(hm[i], tags[i])
            results.append(self.postprocess(poses, scores, p, hm.shape[2:]))
        return results


def torch_network(model: Any, device: str = "cpu", fp16: bool = False, channels_last: bool = False) -> Network:
    """Wrap a torch model as a network callable (numpy in, numpy out)."""
    import torch

    dev = torch.device(device)
    model = model.to(dev).eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model = model.to(memory_format=fmt)

    def run(batch: np.ndarray) -> list[np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(dev, memory_format=fmt)
        with torch.inference_mode():
            if fp16 and dev.type == "cuda":
                with torch.autocast("cuda", dtype=torch.float16):
                    outs = model(x)
            else:
                outs = model(x)
        return [o.float().cpu().numpy() for o in outs]

    return run
