"""Image -> poses: the official test pipeline (docs/official.md §7) around any network, driven by one :class:`Codec`.

Stages (each callable on its own so a benchmark can time them):

1. preprocess  :meth:`Codec.preprocess`: official resize (or the letterbox), normalisation;
2. network     torch, ONNX Runtime or TensorRT; what it returns is its graph kind's (:mod:`hhrnet.graphs`):
               a ``raw`` graph gets the flipped image in the same batch and the host aggregates; an
               aggregating graph returns decoder-ready maps (and, ``peaks``, its (B, J, M) top-k peaks);
3. aggregate   (raw only) stages averaged, flip merged, projected, scales combined, in torch's exact
               float32 arithmetic (:mod:`hhrnet.kernels.aggregate`), so the default pipeline equals the
               official one bit for bit;
4. decode      :mod:`hhrnet.kernels` (fast Numba by default, the reference, or CUDA);
5. postprocess the inverse affine back to image pixels.

:class:`MapDecoder` is stages 3-5 (what the server runs after its network model); :class:`Predictor` puts
stages 1-2 in front of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hhrnet.choices import DECODERS, Decoder
from hhrnet.codec import Codec, Prepared
from hhrnet.errors import BackendError, InputError
from hhrnet.graphs import GraphKind, graph_kind
from hhrnet.images import read_image

Network = Callable[[np.ndarray], Sequence[np.ndarray]]

__all__ = ["Decoder", "MapDecoder", "Maps", "Network", "Poses", "Predictor", "read_image", "torch_network"]


@dataclass
class Poses:
    """Poses of one image in image pixels."""

    keypoints: np.ndarray  # (P, J, 3) f32: x, y, heatmap value
    scores: np.ndarray  # (P,) f32 person score (official: mean joint value before refine)

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class Maps:
    """Decoder inputs of one image: final heatmaps, tags and, from a peaks graph, its top-k peaks."""

    heatmaps: np.ndarray  # (J, H, W) f32
    tags: np.ndarray  # (J, H, W, T) f32
    peaks: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # vals (J, M), index (J, M), tags (J, M, T)


def check_finite_maps(arrays: Sequence[np.ndarray]) -> None:
    """InputError when a network output (or map made from one) holds NaN or infinite values."""
    for a in arrays:
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise InputError("the network produced NaN or infinite maps (check the weights / engine / input)")


class MapDecoder:
    """What follows the network: its outputs (of graph kind ``graph``) -> maps -> poses in image pixels.

    Stage 3 (host aggregation, for a graph that does not aggregate), stage 4 (the decoder) and stage 5 (back to
    image pixels), for one codec. The server uses it directly; :class:`Predictor` puts a network in front.
    """

    def __init__(
        self, codec: Codec, *, graph: str = "raw", decoder: Decoder = "fast", parallel_decode: bool = False
    ) -> None:
        if decoder not in DECODERS:
            raise InputError(f"unknown decoder {decoder!r}; expected {', '.join(DECODERS)}")
        self.codec = codec
        self.kind: GraphKind = graph_kind(graph)
        self.kind.check_scales(codec.scales)
        self.decoder = decoder
        self.parallel_decode = parallel_decode  # peaks and refine over all Numba threads; same output
        if decoder == "cuda":
            self._check_cuda()

    @staticmethod
    def _check_cuda() -> None:
        try:
            from numba import cuda
        except ImportError as exc:  # pragma: no cover - numba is a core dependency
            raise BackendError(f"--decoder cuda is unavailable: {exc}") from None
        if not cuda.is_available():
            raise BackendError("--decoder cuda needs a CUDA GPU (numba.cuda finds none)")

    # stage 3
    def to_maps(
        self, outs: list[np.ndarray], flipped: list[np.ndarray] | None, project_to: tuple[int, int] | None
    ) -> list[Maps]:
        """Network outputs of one scale -> one :class:`Maps` per image (host aggregation for a raw graph)."""
        if not self.kind.aggregates:
            hm, tags = self.codec.aggregate([o.astype(np.float32, copy=False) for o in outs], flipped, project_to)
            return [Maps(hm[i], tags[i]) for i in range(len(hm))]
        hm, tags = outs[0].astype(np.float32, copy=False), outs[1].astype(np.float32, copy=False)
        if self.kind.peaks:
            vals, index, ptags = outs[2].astype(np.float32), outs[3].astype(np.int64), outs[4].astype(np.float32)
            return [Maps(hm[i], tags[i], (vals[i], index[i], ptags[i])) for i in range(len(hm))]
        return [Maps(hm[i], tags[i]) for i in range(len(hm))]

    # stage 4
    def decode(self, maps: Maps) -> tuple[np.ndarray, np.ndarray]:
        heatmaps, tags = self.codec.for_decoding(maps.heatmaps, maps.tags)
        params = self.codec.decode
        if maps.peaks is not None and self.decoder == "fast" and not self.codec.drop_center:
            from hhrnet.kernels.decode import decode_from_peaks

            return decode_from_peaks(heatmaps, tags, *maps.peaks, params)
        if self.decoder == "reference":
            from hhrnet.kernels.reference import decode_reference

            return decode_reference(heatmaps, tags, params)
        if self.decoder == "cuda":
            from hhrnet.kernels.cuda import decode_cuda

            return decode_cuda(heatmaps[None], tags[None], params, capacity=params.person_capacity).image(0)
        from hhrnet.kernels.decode import decode

        return decode(heatmaps, tags, params, parallel=self.parallel_decode)

    # stage 5
    def postprocess(self, poses: np.ndarray, scores: np.ndarray, prepared: Prepared, map_hw: tuple[int, int]) -> Poses:
        return Poses(self.codec.to_image(poses, prepared, map_hw), scores.astype(np.float32))

    def poses(self, maps: Maps, prepared: Prepared) -> Poses:
        """Stages 4-5: one image's maps -> its poses in image pixels."""
        poses, scores = self.decode(maps)
        return self.postprocess(poses, scores, prepared, maps.heatmaps.shape[1:])


class Predictor:
    """The official test pipeline: a network callable followed by a :class:`MapDecoder`, both from ``codec``."""

    def __init__(
        self,
        network: Network,
        codec: Codec,
        *,
        decoder: Decoder = "fast",
        graph: str | None = None,
        parallel_decode: bool = False,
    ) -> None:
        self.network = network
        self.codec = codec
        self.graph: str = graph or getattr(network, "graph", None) or "raw"
        self.maps_decoder = MapDecoder(codec, graph=self.graph, decoder=decoder, parallel_decode=parallel_decode)
        self.kind = self.maps_decoder.kind
        self.decoder = decoder

    # stage 1
    def preprocess(self, image: np.ndarray) -> Prepared:
        return self.codec.preprocess(image)

    # stage 2
    def run_network(self, batch: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """(outputs, flipped outputs): a graph that does not flip inside gets the flipped copy in the same batch."""
        b = batch.shape[0]
        host_flip = self.codec.flip and self.kind.host_flips
        x = np.concatenate([batch, batch[:, :, :, ::-1]], 0) if host_flip else batch
        outs = [np.asarray(o) for o in self.network(np.ascontiguousarray(x, np.float32))]
        check_finite_maps(outs)
        if not host_flip:
            return outs, None
        return [o[:b] for o in outs], [o[b:] for o in outs]

    # stage 3
    def to_maps(
        self, outs: list[np.ndarray], flipped: list[np.ndarray] | None, project_to: tuple[int, int] | None
    ) -> list[Maps]:
        return self.maps_decoder.to_maps(outs, flipped, project_to)

    def batch_maps(self, batch: np.ndarray, project_to: tuple[int, int] | None) -> list[Maps]:
        """Stages 2-3 for (B, 3, H, W) inputs of one scale."""
        return self.to_maps(*self.run_network(batch), project_to)

    def maps(self, prepared: Prepared) -> Maps:
        """Stages 2-3 for one image over all its scales (official: heatmaps averaged, tags from scale 1)."""
        from hhrnet.kernels.aggregate import combine_scales, resize_maps

        project = self.codec.project_size(prepared)
        heatmaps: list[np.ndarray] = []
        at_one: Maps | None = None
        for s, x in prepared.inputs:
            m = self.batch_maps(x[None], project)[0]
            hm = m.heatmaps
            if project is None and heatmaps:
                hm = resize_maps(hm[None], heatmaps[0].shape[1:])[0]
            heatmaps.append(hm)
            if s == 1.0:
                at_one = m
        assert at_one is not None  # the codec guarantees scale 1
        if len(heatmaps) == 1:
            return at_one
        tags = at_one.tags
        if project is None and tags.shape[1:3] != heatmaps[0].shape[1:]:
            moved = np.moveaxis(tags, 3, 0)  # (T, J, h, w)
            tags = np.ascontiguousarray(np.moveaxis(resize_maps(moved, heatmaps[0].shape[1:]), 0, 3))
        return Maps(*combine_scales(heatmaps, tags))

    # stages 4-5
    def decode(self, maps: Maps) -> tuple[np.ndarray, np.ndarray]:
        return self.maps_decoder.decode(maps)

    def postprocess(self, poses: np.ndarray, scores: np.ndarray, prepared: Prepared, map_hw: tuple[int, int]) -> Poses:
        return self.maps_decoder.postprocess(poses, scores, prepared, map_hw)

    def on_device(self) -> bool:
        """Whether decoding reads the network's outputs on the GPU: the CUDA decoder on a runtime that keeps
        its outputs there (TensorRT's ``run_device``), a graph that aggregates, one scale, no centre channel."""
        return (
            self.decoder == "cuda"
            and self.kind.aggregates
            and hasattr(self.network, "run_device")
            and len(self.codec.scales) == 1
            and not self.codec.drop_center
            and self.codec.tag_channels == self.codec.num_joints  # a shared tag map is expanded on the host
        )

    def predict_on_device(self, prepared: Prepared) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """Network and decode with no host round trip of the maps: (poses, scores, map (H, W))."""
        from hhrnet.kernels.cuda import decode_cuda

        outs = self.network.run_device(prepared.inputs[0][1][None])  # type: ignore[attr-defined]
        heatmaps, tags = outs[0], outs[1]  # device arrays, valid until the next call
        params = self.codec.decode
        batch = decode_cuda(heatmaps, tags, params, capacity=params.person_capacity)
        poses, scores = batch.image(0)
        shape = heatmaps.__cuda_array_interface__["shape"]
        return poses, scores, (int(shape[2]), int(shape[3]))

    def predict(self, image: np.ndarray) -> Poses:
        prepared = self.preprocess(image)
        if self.on_device():
            poses, scores, map_hw = self.predict_on_device(prepared)
            return self.postprocess(poses, scores, prepared, map_hw)
        return self.maps_decoder.poses(self.maps(prepared), prepared)

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[Poses]:
        """With a letterbox the network runs once for the whole batch; the official resize runs per image."""
        if not self.codec.letterbox:
            return [self.predict(im) for im in images]
        prepared = [self.preprocess(im) for im in images]
        batch = np.stack([p.inputs[0][1] for p in prepared])
        all_maps = self.batch_maps(batch, self.codec.project_size(prepared[0]))
        return [self.maps_decoder.poses(maps, p) for p, maps in zip(prepared, all_maps, strict=True)]


def torch_network(model: Any, device: str = "cpu", fp16: bool = False, channels_last: bool = False) -> Network:
    """Wrap a torch model as a raw network callable (numpy in, numpy out)."""
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
