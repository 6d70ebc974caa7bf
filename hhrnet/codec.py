"""The codec: the one test-time contract between an image and its poses, apart from the network.

Every choice the official test pipeline makes outside the network lives here, once (docs/official.md §7-8):

* input: short side to ``input_size``, long side rounded up to a multiple of 64 (of 128 with multi-scale),
  the official affine warp, ImageNet mean/std; or, opt-in, a ``letterbox`` square for fixed-shape batches;
* network output layout: J heatmap channels, tag channels, which stages give heatmaps / tags;
* aggregation: flip test and its ``flip_index``, scales, projection to the input size, a trailing centre
  channel dropped (official ``WITH_CENTER`` + ``IGNORE_CENTER``);
* decoding: :class:`~hhrnet.kernels.params.DecodeParams` (thresholds, NMS, joint order, opt-in fixes);
* back to image pixels: the inverse of the input warp.

**Where the contract is decided**: :func:`resolve_codec`, one function for every command, the demo, the
evaluator, the exporter and the server. A :class:`Codec` is built from a :class:`~hhrnet.config.Config`
(:meth:`Codec.from_config`, which also builds the :class:`~hhrnet.kernels.params.DecodeParams`), written
completely into every exported file (ONNX metadata, TensorRT engine sidecar) and rebuilt from there
(:meth:`Codec.from_json`) with nothing else, so the deployed pipeline is the verified one. The predictor,
export, calibration, the runtimes and the decoders take their settings only from it.

Dimension letters: B batch, J joints, H x W map size, T tag dimension (2 with flip), P people.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from hhrnet.datasets import DATASETS, IMAGENET_MEAN, IMAGENET_STD
from hhrnet.errors import ConfigError, InputError
from hhrnet.kernels.params import DecodeParams, default_joint_order
from hhrnet.warp import warp_affine

if TYPE_CHECKING:
    from hhrnet.config import Config

SCHEMA = 1
MAX_INPUT_PIXELS = 4096 * 1024  # default bound on one network input (h * w), largest scale: 4.2 MP
MAX_INPUT_SIDE = 4096  # default bound on its longest side
HARD_MAX_INPUT_PIXELS = 1 << 28  # what an override may raise the bounds to (268 MP, about 50 GB of float maps)
HARD_MAX_INPUT_SIDE = 1 << 15
MAX_SCALES = 8
# keys added after schema 1 was first written: an older artifact without them gets the defaults
_ADDED_KEYS = {"max_input_pixels": MAX_INPUT_PIXELS, "max_input_side": MAX_INPUT_SIDE, "tag_dim": 1}
MAX_TAG_DIM = 16  # values per tag (model.tag_dim)
SIDE_MULTIPLE = 64  # a letterbox square (and every official-resize input side) is a multiple of this


def round_up_side(side: int) -> int:
    """``side`` rounded up to a multiple of :data:`SIDE_MULTIPLE`."""
    return -(-int(side) // SIDE_MULTIPLE) * SIDE_MULTIPLE


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
    """2x3 matrix mapping the box (center, scale * 200 wide) onto ``output_size`` (w, h), or back."""
    import cv2

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


def image_center(width: int, height: int) -> np.ndarray:
    """The official centre (int rounding half up), used by the official resize and by the letterbox."""
    return np.array([int(width / 2.0 + 0.5), int(height / 2.0 + 0.5)])


def multi_scale_size(
    width: int, height: int, input_size: int, current_scale: float, min_scale: float
) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """Official ``get_multi_scale_size``: ((w, h) resized, center, scale)."""
    center = image_center(width, height)
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


def letterbox_box(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(center, scale) of the square box around the whole image, for the letterbox input."""
    side = max(width, height) / 200.0
    return image_center(width, height), np.array([side, side])


def to_image_coords(poses: np.ndarray, center: np.ndarray, scale: np.ndarray, map_size: tuple[int, int]) -> np.ndarray:
    """Official ``get_final_preds``: (P, J, C) map coordinates -> image pixels (x, y only); ``map_size`` (w, h)."""
    out = poses.astype(np.float32, copy=True)
    if len(out) == 0:
        return out
    trans = affine_transform(center, scale, 0, map_size, inverse=True)
    xy = out[..., :2].reshape(-1, 2).astype(np.float64)
    mapped = xy @ trans[:, :2].T + trans[:, 2]
    out[..., :2] = mapped.reshape(out.shape[:-1] + (2,))
    return out


@dataclass
class Prepared:
    """Network inputs of one image, per scale (largest first), and the geometry to map back."""

    inputs: list[tuple[float, np.ndarray]]  # (scale factor, (3, h, w) f32)
    base_size: tuple[int, int]  # (w, h) the maps are projected to
    center: np.ndarray
    scale: np.ndarray


# --------------------------------------------------------------------------------------------
# the codec
# --------------------------------------------------------------------------------------------


def _stage_masks(cfg: Config) -> tuple[tuple[bool, ...], tuple[bool, ...]]:
    """Stages whose heatmaps / tags the test pipeline uses: trained and selected (official: the loss and
    test masks; tags also need the stage to have tag channels, which the model section says)."""
    loss, test = cfg.loss, cfg.test
    with_hm = tuple(a and b for a, b in zip(loss.with_heatmaps_loss, test.with_heatmaps, strict=True))
    with_ae = tuple(
        a and b and c for a, b, c in zip(cfg.model.tag_stages, loss.with_ae_loss, test.with_ae, strict=True)
    )
    return with_hm, with_ae


def _flag_changes(flip: bool | None, scales: Sequence[float] | None, letterbox: int | None) -> dict[str, Any]:
    """The codec fields a command's explicit test flags set (None = keep)."""
    changes: dict[str, Any] = {}
    if flip is not None:
        changes["flip"] = bool(flip)
    if scales is not None:
        changes["scales"] = tuple(scales)
    if letterbox is not None:
        changes["letterbox"] = int(letterbox)
    return changes


def _decode_params(cfg: Config) -> DecodeParams:
    """The decoder's parameters a config defines (official ``WITH_CENTER`` / ``IGNORE_CENTER`` rule: a trailing
    centre channel is either dropped, or kept and grouped first)."""
    t = cfg.test
    joints = cfg.model.num_joints
    with_center = cfg.data.with_center
    if with_center and t.ignore_center:
        joints -= 1
    return DecodeParams(
        num_joints=joints,
        max_num_people=cfg.data.max_num_people,
        detection_threshold=float(t.detection_threshold),
        tag_threshold=float(t.tag_threshold),
        use_detection_val=t.use_detection_val,
        ignore_too_much=t.ignore_too_much,
        nms_kernel=t.nms_kernel,
        nms_padding=t.nms_padding,
        adjust=t.adjust,
        refine=t.refine,
        joint_order=default_joint_order(joints, center_first=with_center and not t.ignore_center),
        max_persons=t.max_persons,
        unique_person_keys=t.unique_person_keys,
        ties_positive=t.ties_positive,
        pose_nms=float(t.pose_nms),
    )


@dataclass(frozen=True)
class Codec:
    """Everything between an image and its poses except the network. Frozen; compared field by field."""

    dataset: str = "coco"  # coco | crowdpose: joint names, skeleton and OKS sigmas downstream
    num_joints: int = 17  # J: heatmap channels of the network (a centre channel included)
    tag_channels: int = 17  # J with tag_per_joint, else 1: the channels of one tag map
    tag_dim: int = 1  # D: values per tag (official 1); the network gives D groups of tag_channels
    stage_heatmaps: tuple[bool, ...] = (True, True)  # stages averaged into the heatmaps
    stage_tags: tuple[bool, ...] = (True, False)  # stages whose tags are used
    input_size: int = 512  # short side (official) or letterbox side
    scales: tuple[float, ...] = (1.0,)  # test scales, largest first; tags come from scale 1
    flip: bool = True  # flip test: T = 2
    flip_index: tuple[int, ...] = ()  # channel permutation of the flipped pass (J entries)
    project2image: bool = True  # maps resized to the input size before decoding
    mean: tuple[float, float, float] = IMAGENET_MEAN  # RGB, after /255
    std: tuple[float, float, float] = IMAGENET_STD
    letterbox: int = 0  # 0: the official resize; > 0: pad every image into this square (fixed shapes)
    drop_center: bool = False  # the last heatmap/tag channel is a centre joint and is not decoded
    decode: DecodeParams = field(default_factory=DecodeParams)
    # bounds on one network input (largest scale): an image whose official resize exceeds them is refused
    max_input_pixels: int = MAX_INPUT_PIXELS  # h * w
    max_input_side: int = MAX_INPUT_SIDE  # max(h, w)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"codec dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if self.num_joints < 1 or self.tag_channels not in (1, self.num_joints):
            raise ConfigError(f"codec: {self.tag_channels} tag channels do not fit {self.num_joints} joints")
        if not (1 <= self.tag_dim <= MAX_TAG_DIM):
            raise ConfigError(f"codec tag_dim must be in 1..{MAX_TAG_DIM}, got {self.tag_dim}")
        if len(self.flip_index) != self.num_joints or sorted(self.flip_index) != list(range(self.num_joints)):
            raise ConfigError(f"codec flip_index {self.flip_index} is not a permutation of {self.num_joints} joints")
        if len(self.stage_heatmaps) != len(self.stage_tags) or not any(self.stage_heatmaps):
            raise ConfigError("codec: stage masks must have one entry per stage and select some heatmaps")
        if not any(self.stage_tags):
            raise ConfigError("codec: no stage provides tags")
        if not (1 <= self.max_input_side <= HARD_MAX_INPUT_SIDE):
            raise ConfigError(f"test.max_input_side must be in 1..{HARD_MAX_INPUT_SIDE}, got {self.max_input_side}")
        if not (1 <= self.max_input_pixels <= HARD_MAX_INPUT_PIXELS):
            raise ConfigError(
                f"test.max_input_pixels must be in 1..{HARD_MAX_INPUT_PIXELS}, got {self.max_input_pixels}"
            )
        if (
            not self.scales
            or 1.0 not in self.scales
            or not all(isinstance(s, int | float) and math.isfinite(s) and s > 0 for s in self.scales)
        ):
            raise ConfigError(
                f"codec scales {self.scales} must be finite, positive and include 1.0 (tags come from scale 1)"
            )
        if len(self.scales) > MAX_SCALES:
            raise ConfigError(f"at most {MAX_SCALES} test scales, got {len(self.scales)}")
        object.__setattr__(self, "scales", tuple(sorted((float(s) for s in self.scales), reverse=True)))
        if self.input_size < 32 or self.input_size % 32:
            raise ConfigError(f"codec input_size must be a positive multiple of 32, got {self.input_size}")
        short = self.input_size * max(self.scales)
        if short > self.max_input_side or short * short > self.max_input_pixels:
            raise ConfigError(
                f"input size {self.input_size} at scale {max(self.scales):g} is a {short:g}-pixel short side, over "
                f"the network input bound ({self.max_input_side} px per side, {self.max_input_pixels} pixels; "
                "test.max_input_side / test.max_input_pixels)"
            )
        if self.letterbox < 0 or self.letterbox % 64:
            raise ConfigError(f"letterbox size must be a multiple of 64 (0 = official resize), got {self.letterbox}")
        if self.letterbox > self.max_input_side or self.letterbox**2 > self.max_input_pixels:
            raise ConfigError(
                f"letterbox {self.letterbox} is over the network input bound ({self.max_input_side} px per side, "
                f"{self.max_input_pixels} pixels; test.max_input_side / test.max_input_pixels)"
            )
        if self.letterbox and len(self.scales) != 1:
            raise ConfigError("letterbox runs one scale; drop the extra test scales")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("codec mean/std need 3 values each, std > 0")
        decoded = self.num_joints - (1 if self.drop_center else 0)
        if self.decode.num_joints != decoded:
            raise ConfigError(f"codec decodes {self.decode.num_joints} joints but the maps have {decoded}")

    # construction -------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        cfg: Config,
        *,
        flip: bool | None = None,
        scales: Sequence[float] | None = None,
        letterbox: int | None = None,
    ) -> Codec:
        """The codec a config defines; ``flip``, ``scales`` and ``letterbox`` override its test section (the same
        rule as :meth:`with_flags`, applied before the codec is checked)."""
        with_hm, with_ae = _stage_masks(cfg)
        joints = cfg.model.num_joints
        test = cfg.test
        fields_: dict[str, Any] = {
            "dataset": cfg.data.dataset,
            "num_joints": joints,
            "tag_channels": joints if cfg.model.tag_per_joint else 1,
            "tag_dim": cfg.model.tag_dim,
            "stage_heatmaps": with_hm,
            "stage_tags": with_ae,
            "input_size": cfg.data.input_size,
            "scales": tuple(test.scale_factor),
            "flip": test.flip_test,
            "flip_index": tuple(cfg.data.flip_index),
            "project2image": test.project2image,
            "letterbox": 0,
            "drop_center": bool(cfg.data.with_center and test.ignore_center),
            "decode": _decode_params(cfg),
            "max_input_pixels": test.max_input_pixels,
            "max_input_side": test.max_input_side,
        }
        return cls(**(fields_ | _flag_changes(flip, scales, letterbox)))

    def replace(self, **changes: Any) -> Codec:
        return replace(self, **changes)

    def with_flags(
        self, flip: bool | None = None, scales: Sequence[float] | None = None, letterbox: int | None = None
    ) -> Codec:
        """This codec with a command's explicit test flags applied (None = keep)."""
        changes = _flag_changes(flip, scales, letterbox)
        return self.replace(**changes) if changes else self

    def letterboxed(self, side: int | None = None) -> Codec:
        """This codec letterboxing every image into one square, for fixed shapes (static exports, serving):
        ``side`` when given, else its own letterbox, else the input size rounded up to a multiple of 64."""
        if len(self.scales) != 1:
            raise ConfigError("a letterboxed pipeline runs one scale; drop the extra test scales")
        return self.replace(letterbox=int(side or self.letterbox or round_up_side(self.input_size)))

    def relayered(self, was: Config, now: Config) -> Codec:
        """This codec with what changed from config ``was`` to config ``now`` applied, and nothing else.

        An artifact's codec may differ from its config's (e.g. exported with ``--no-flip``); a later
        ``--set test.detection_threshold=0.2`` must change only that threshold, not re-derive the rest.
        """
        before, after = Codec.from_config(was), Codec.from_config(now)
        decode = {
            f.name: getattr(after.decode, f.name)
            if getattr(after.decode, f.name) != getattr(before.decode, f.name)
            else getattr(self.decode, f.name)
            for f in fields(DecodeParams)
        }
        changed = {
            f.name: getattr(after, f.name)
            for f in fields(Codec)
            if f.name != "decode" and getattr(after, f.name) != getattr(before, f.name)
        }
        return replace(self, **changed, decode=DecodeParams(**decode))

    # serialisation --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["schema"] = SCHEMA
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "codec") -> Codec:
        """Strict inverse of :meth:`to_dict`: unknown or missing keys are errors naming ``source``."""
        data = dict(data)
        schema = data.pop("schema", None)
        if schema != SCHEMA:
            raise ConfigError(f"{source}: codec schema {schema!r} is not {SCHEMA}; re-export with this hhrnet")
        names = {f.name for f in fields(cls)}
        for key, default in _ADDED_KEYS.items():
            data.setdefault(key, default)
        unknown, missing = sorted(set(data) - names), sorted(names - set(data))
        if unknown or missing:
            raise ConfigError(f"{source}: codec keys unknown {unknown} / missing {missing}; re-export with this hhrnet")
        decode = data.pop("decode")
        dnames = {f.name for f in fields(DecodeParams)}
        if not isinstance(decode, Mapping) or set(decode) != dnames:
            raise ConfigError(f"{source}: codec decode parameters do not match this hhrnet's; re-export")
        plain: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in decode.items()}
        top: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        try:
            return cls(decode=DecodeParams(**plain), **top)
        except TypeError as exc:
            raise ConfigError(f"{source}: malformed codec: {exc}") from None

    @classmethod
    def from_json(cls, text: str, source: str = "codec") -> Codec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: codec is not valid JSON ({exc})") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: codec is not a JSON object")
        return cls.from_dict(data, source)

    # derived ------------------------------------------------------------------------------

    @property
    def tag_dims(self) -> int:
        """T of the aggregated tag maps: D per stage with tags and pass (2 passes with flip)."""
        return sum(self.stage_tags) * self.tag_dim * (2 if self.flip else 1)

    def map_hw(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        """(H, W) of the decoded maps for a network input of ``input_hw``: the input size when projected to
        it (``project2image``), else the network's finest stage, half of it."""
        h, w = input_hw
        return (h, w) if self.project2image else (h // 2, w // 2)

    @property
    def decoded_joints(self) -> int:
        return self.decode.num_joints

    # stage 1: image -> network inputs ---------------------------------------------------------

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> (3, H, W) f32 with the codec's mean/std (as ToTensor + Normalize)."""
        mean = np.asarray(self.mean, np.float32)
        std = np.asarray(self.std, np.float32)
        x = image.astype(np.float32) / np.float32(255.0)
        return np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1))

    def input_hw(self, width: int, height: int) -> tuple[int, int]:
        """(H, W) of the largest network input an image of this size gets (official resize or letterbox)."""
        if self.letterbox:
            return self.letterbox, self.letterbox
        (w_r, h_r), _, _ = multi_scale_size(width, height, self.input_size, max(self.scales), min(self.scales))
        return h_r, w_r

    def check_size(self, width: int, height: int, name: str = "image") -> None:
        """InputError naming the sizes when an image of ``width`` x ``height`` would need a network input over
        the bounds (extreme aspect ratios under the official resize): refused, never letterboxed silently."""
        if width < 1 or height < 1:
            raise InputError(f"{name} is {width}x{height} pixels: nothing to predict")
        h, w = self.input_hw(width, height)
        if max(h, w) > self.max_input_side or h * w > self.max_input_pixels:
            raise InputError(
                f"{name} is {width}x{height}: the official resize makes it a {w}x{h} network input, over the bound "
                f"of {self.max_input_side} px per side and {self.max_input_pixels} pixels (test.max_input_side / "
                "test.max_input_pixels); use --letterbox SIZE for extreme aspect ratios"
            )

    def preprocess(self, image: np.ndarray) -> Prepared:
        """Network inputs per scale and the geometry to map poses back (official resize or letterbox)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        self.check_size(w, h)
        if self.letterbox:
            side = self.letterbox
            center, scale = letterbox_box(w, h)
            trans = affine_transform(center, scale, 0, (side, side))
            warped = warp_affine(image, trans, (side, side))
            return Prepared([(1.0, self.normalize(warped))], (side, side), center, scale)
        min_scale = min(self.scales)
        base, center, scale = multi_scale_size(w, h, self.input_size, 1.0, min_scale)
        inputs = []
        for s in self.scales:
            resized, c, sc = multi_scale_size(w, h, self.input_size, s, min_scale)
            trans = affine_transform(c, sc, 0, resized)
            warped = warp_affine(image, trans, resized)
            inputs.append((s, self.normalize(warped)))
            center, scale = c, sc
        return Prepared(inputs, base, center, scale)

    # stage 3: network outputs -> maps ----------------------------------------------------------

    def aggregate(
        self, outputs: Sequence[np.ndarray], flipped: Sequence[np.ndarray] | None, project_to: tuple[int, int] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One scale on the host (exactly torch's arithmetic): heatmaps (B, J, H, W), tags (B, J, H, W, T)."""
        from hhrnet.kernels.aggregate import aggregate

        return aggregate(
            outputs,
            flipped,
            num_joints=self.num_joints,
            flip_index=self.flip_index,
            with_heatmaps=self.stage_heatmaps,
            with_ae=self.stage_tags,
            project_to=project_to,
            tag_dim=self.tag_dim,
        )

    def project_size(self, prepared: Prepared) -> tuple[int, int] | None:
        """(H, W) every scale's maps are resized to, or None without PROJECT2IMAGE."""
        return (prepared.base_size[1], prepared.base_size[0]) if self.project2image else None

    def for_decoding(self, heatmaps: np.ndarray, tags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """heatmaps (.., J, H, W), tags (.., J or 1, H, W, T) -> what the decoder reads: one tag map shared by
        every joint (official TAG_PER_JOINT False) expanded to J (as the official ``top_k`` and ``refine`` do),
        then a trailing centre channel dropped when the codec says so (official IGNORE_CENTER)."""
        if tags.shape[-4] == 1 and heatmaps.shape[-3] > 1:
            tags = np.broadcast_to(tags, (*heatmaps.shape, tags.shape[-1]))
        if not self.drop_center:
            return heatmaps, tags
        return heatmaps[..., :-1, :, :], tags[..., :-1, :, :, :]

    # stage 5: map coordinates -> image pixels -------------------------------------------------

    def to_image(self, poses: np.ndarray, prepared: Prepared, map_hw: tuple[int, int]) -> np.ndarray:
        """(P, J, 3+T) map coordinates -> (P, J, 3) image pixels + value."""
        mapped = to_image_coords(poses, prepared.center, prepared.scale, (map_hw[1], map_hw[0]))
        return np.ascontiguousarray(mapped[..., :3])


def resolve_codec(
    cfg: Config,
    *,
    artifact: tuple[Codec, Config] | None = None,
    flip: bool | None = None,
    scales: Sequence[float] | None = None,
    letterbox: int | None = None,
) -> Codec:
    """The test-time contract a command runs with; every command, the demo, the evaluator, the exporter and the
    server get their codec here. Precedence, lowest first:

    1. the config ``cfg``, already layered by :func:`hhrnet.config.layered` (embedded config, then ``--config``,
       then ``--set``) — for a checkpoint or a bare config this is the whole base;
    2. for an exported file, ``artifact`` = (its embedded codec, its embedded config): the embedded codec is the
       base and only what ``cfg`` changed from the embedded config is applied to it (an export made with
       ``--no-flip`` stays flip-free when a user only changes a threshold);
    3. the command's explicit test flags (``--flip/--no-flip``, ``--scales``, ``--letterbox``).

    The caller checks the result against what an artifact's graph bakes in (``Artifact.check``).
    """
    if artifact is None:
        codec = Codec.from_config(cfg)
    else:
        embedded_codec, embedded_cfg = artifact
        codec = embedded_codec.relayered(embedded_cfg, cfg)
    return codec.with_flags(flip, scales, letterbox)
