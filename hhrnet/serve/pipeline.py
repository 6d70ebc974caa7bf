"""The served pipeline's steps, free of Triton, torch and tritonclient: what the backend models run.

* :func:`image_size` (:func:`hhrnet.images.header_size`) reads the pixel size from a JPEG, PNG, BMP, WebP or
  TIFF header, so an image far too large is refused before a single pixel is decoded;
  :func:`decode_request_image` applies :class:`~hhrnet.images.ImageLimits` and the truncation checks of
  :func:`hhrnet.images.decode_image`; a file without a readable header is refused, never decoded unchecked;
* :class:`ServedPipeline` letterboxes images into the network's square (:meth:`~ServedPipeline.prepare`)
  and turns one image's network outputs plus its original size back into poses in image pixels
  (:meth:`~ServedPipeline.poses`), with the same :class:`~hhrnet.inference.MapDecoder` as ``predict``;
* :func:`pad_poses` / :func:`unpad_poses`: the padded fixed-rank tensors a batched response carries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hhrnet.codec import Codec, Prepared, letterbox_box
from hhrnet.errors import ConfigError, InputError
from hhrnet.graphs import KINDS, graph_kind
from hhrnet.images import ImageLimits, decode_image, header_size
from hhrnet.inference import MapDecoder, Maps, Poses, check_finite_maps

SERVABLE_GRAPHS = tuple(k.name for k in KINDS.values() if k.servable)

image_size = header_size  # (width, height) from the header; None when unreadable


def decode_request_image(data: bytes, limits: ImageLimits, name: str = "image") -> np.ndarray:
    """Encoded bytes -> RGB uint8 (H, W, 3); InputError naming ``name`` when empty, too large or corrupt."""
    if len(data) == 0:
        raise InputError(f"{name} is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InputError(f"{name} is {len(data)} bytes; this server accepts at most {limits.max_bytes}")
    size = image_size(data)
    if size is not None and size[0] * size[1] > limits.max_pixels:
        raise InputError(
            f"{name} is {size[0]}x{size[1]} pixels; this server accepts at most {limits.max_pixels} pixels"
        )
    if size is not None and min(size) == 0:
        raise InputError(f"{name} has a zero-sized header ({size[0]}x{size[1]})")
    return decode_image(data, name, limits)  # refuses what has no readable header: nothing unchecked is decoded


def served_codec(codec: Codec, static_hw: tuple[int, int] | None = None, letterbox: int | None = None) -> Codec:
    """The codec a server runs: the artifact's, letterboxed so images of any size batch together.

    The square is a static export's input, else ``letterbox`` when given, else what
    :meth:`~hhrnet.codec.Codec.letterboxed` chooses (its own letterbox, else the input size rounded up to 64).
    """
    if static_hw is not None:
        side = static_hw[0]
        if letterbox not in (None, side):
            raise ConfigError(f"this export has a fixed {side}x{side} input; it cannot serve letterbox {letterbox}")
        letterbox = side
    if len(codec.scales) != 1:
        raise ConfigError("the served pipeline runs one scale; export without extra test scales")
    return codec.letterboxed(letterbox)


class ServedPipeline:
    """Letterbox in, poses out, for one codec and graph: the steps ``predict --letterbox`` runs in-process."""

    def __init__(self, codec: Codec, graph: str, decoder: str = "fast") -> None:
        if not graph_kind(graph).servable:
            raise ConfigError(
                f"the served pipeline runs the {' or '.join(SERVABLE_GRAPHS)} graph (flip and projection in the "
                f"network), not {graph!r}: re-export with --graph aggregate"
            )
        if not codec.letterbox:
            raise ConfigError("the served pipeline needs a letterboxed codec (see served_codec)")
        self.codec = codec
        self.graph = graph
        self.side = codec.letterbox
        self.decoder = MapDecoder(codec, graph=graph, decoder=decoder)  # type: ignore[arg-type]

    @property
    def map_side(self) -> int:
        """Side of the decoded maps (:meth:`~hhrnet.codec.Codec.map_hw` of the input square)."""
        return self.codec.map_hw((self.side, self.side))[0]

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> (3, S, S) f32, the letterboxed and normalised network input."""
        return self.codec.preprocess(image).inputs[0][1]

    def geometry(self, width: int, height: int) -> Prepared:
        """The letterbox box of an image of this size (what :meth:`prepare` warped it with)."""
        if width < 1 or height < 1:
            raise InputError(f"image size must be positive, got {width}x{height}")
        center, scale = letterbox_box(int(width), int(height))
        return Prepared([], (self.side, self.side), center, scale)

    def poses(self, outputs: Sequence[np.ndarray], width: int, height: int) -> Poses:
        """One image's network outputs (no batch axis, in the graph's output order) -> poses in image pixels."""
        batched = [np.asarray(o)[None] for o in outputs]
        maps: Maps = self.decoder.to_maps(batched, None, None)[0]
        if maps.heatmaps.shape[1:] != (self.map_side, self.map_side):
            raise InputError(
                f"decoder expects {self.map_side}x{self.map_side} maps, got {maps.heatmaps.shape[1]}x"
                f"{maps.heatmaps.shape[2]}"
            )
        check_finite_maps([maps.heatmaps, maps.tags])
        return self.decoder.poses(maps, self.geometry(width, height))


def pad_poses(results: Sequence[Poses], num_joints: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """keypoints (B, P, J, 3) f32, scores (B, P) f32, people (B, 1) int32; P = the largest count, at least 1.

    Rows past an image's own count are zeros. P is at least one so no response carries an empty axis.
    """
    p = max([1, *(len(r) for r in results)])
    keypoints = np.zeros((len(results), p, num_joints, 3), np.float32)
    scores = np.zeros((len(results), p), np.float32)
    people = np.zeros((len(results), 1), np.int32)
    for i, r in enumerate(results):
        n = len(r)
        keypoints[i, :n] = r.keypoints
        scores[i, :n] = r.scores
        people[i, 0] = n
    return keypoints, scores, people


def unpad_poses(keypoints: np.ndarray, scores: np.ndarray, people: np.ndarray) -> list[Poses]:
    """Inverse of :func:`pad_poses`: one :class:`~hhrnet.inference.Poses` per image."""
    counts = np.asarray(people).reshape(-1)
    if keypoints.ndim != 4 or scores.shape != keypoints.shape[:2] or len(counts) != len(keypoints):
        raise InputError(
            f"malformed pose tensors: keypoints {keypoints.shape}, scores {scores.shape}, people {people.shape}"
        )
    if (counts < 0).any() or (counts > keypoints.shape[1]).any():
        raise InputError(f"people counts {counts.tolist()} do not fit {keypoints.shape[1]} rows")
    return [
        Poses(np.ascontiguousarray(keypoints[i, :n], np.float32), np.ascontiguousarray(scores[i, :n], np.float32))
        for i, n in enumerate(counts.tolist())
    ]
