"""COCO-format keypoint datasets (COCO, CrowdPose, the synthetic set) producing HigherHRNet training samples.

One sample (docs/official.md §4, §6): the RGB image (read like the official code) is warped by the official random
affine crop + flip (:mod:`hhrnet.data.transforms`), and targets are rendered at every output size
(:mod:`hhrnet.targets`). Items are dicts::

    image     (3, S, S) float32 tensor, normalised with the ImageNet mean/std
    heatmaps  list over output sizes of (J, R, R) float32 tensors
    masks     list over output sizes of (R, R) float32 tensors (1 = supervise, 0 = ignore)
    joints    list over output sizes of (MAXP, J, 2) int64 tensors (packed tag-loss layout)
    image_id  int
    skipped   tuple of "path: reason" strings for files skipped to produce this item

Official behaviour kept: annotations with ``iscrowd == 0 or num_keypoints > 0`` become people (so non-crowd
people without keypoints are kept as empty rows); the training split drops images without any annotation;
the COCO ignore mask is ``(Σ crowd RLEs + Σ polygons of people with 0 keypoints) < 0.5``; CrowdPose's mask is
all ones.

Bad input is never turned into a silent wrong sample. A missing or undecodable image, an image whose size
differs from its annotation, or a malformed annotation (wrong keypoint count, unreadable segmentation, ...) is
*reported with the file name* and, with ``on_error="skip"`` (default), replaced by the next readable image
(index ``i+1, i+2, ...`` modulo the length): the dataset records ``"path: reason"`` in :attr:`skipped`, logs a
warning and adds it to the item's ``skipped`` field, so the main process sees skips made in DataLoader
workers too (:func:`collate` gathers them). Known-bad indices are remembered per process. With
``on_error="raise"`` the first problem raises :class:`InputError`. An annotation file that is not valid JSON or
lacks the COCO structure always raises :class:`InputError` naming the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from hhrnet.config import Config
from hhrnet.data.transforms import (
    AugmentationSettings,
    apply_transform,
    identity_params,
    normalize_image,
    sample_affine_params,
)
from hhrnet.errors import ConfigError, InputError
from hhrnet.images import read_image as read_rgb  # one image reader for training and inference
from hhrnet.targets import Overflow, TargetEncoder

logger = logging.getLogger(__name__)

ErrorPolicy = Literal["skip", "raise"]
MaskPolicy = Literal["coco", "none"]
Split = Literal["train", "val"]


class _BadSample(Exception):
    """A per-image problem (path + reason); turned into a skip or an InputError by the dataset."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class ScaleAwareSigma:
    """Per-person sigma = max(bbox w, h) / base_size * base_sigma (``int(round(σ + 0.5))`` with int_sigma)."""

    base_size: float = 256.0
    base_sigma: float = 2.0
    int_sigma: bool = False


def load_annotations(ann_file: str | Path) -> Any:
    """A pycocotools ``COCO`` index over ``ann_file``; InputError naming the file when it is malformed."""
    from pycocotools.coco import COCO

    path = Path(ann_file)
    if not path.is_file():
        raise InputError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"malformed annotation file {path}: {exc}") from None
    _check_structure(data, path)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def _check_structure(data: Any, path: Path) -> None:
    if not isinstance(data, dict):
        raise InputError(f"malformed annotation file {path}: top level is {type(data).__name__}, expected an object")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise InputError(f"malformed annotation file {path}: missing list {key!r}")
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or any(k not in img for k in ("id", "file_name", "height", "width")):
            raise InputError(f"malformed annotation file {path}: images[{i}] needs id, file_name, height, width")
        if not all(isinstance(img[k], int) and img[k] > 0 for k in ("height", "width")):
            raise InputError(f"malformed annotation file {path}: images[{i}] height/width must be positive integers")
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or "id" not in ann:
            raise InputError(f"malformed annotation file {path}: annotations[{i}] needs id and image_id")


def find_split_files(root: str | Path, split: str) -> tuple[Path, Path]:
    """(annotation file, image directory) of ``split`` under ``root`` for the supported layouts.

    * COCO and the synthetic set: ``annotations/person_keypoints_{split}.json`` + ``images/{split}/``
    * CrowdPose: ``json/crowdpose_{split}.json`` + ``images/``
    """
    base = Path(root)
    candidates = [
        (base / "annotations" / f"person_keypoints_{split}.json", base / "images" / split),
        (base / "json" / f"crowdpose_{split}.json", base / "images"),
    ]
    for ann, images in candidates:
        if ann.is_file():
            if not images.is_dir():
                raise InputError(f"image directory {images} for annotation file {ann} does not exist")
            return ann, images
    tried = ", ".join(str(a) for a, _ in candidates)
    raise InputError(f"no annotation file for split {split!r} under {base} (looked for {tried})")


class KeypointDataset(Dataset):
    """Training samples from one COCO-format keypoint annotation file and its image directory.

    ``augmentation`` None gives the deterministic centre crop (validation); otherwise the official random
    affine + flip is drawn per sample: from the legacy global ``np.random`` / ``random`` generators when
    ``seed`` is None (official behaviour; torch seeds both in every DataLoader worker), or from
    ``np.random.default_rng((seed, epoch, index))`` when a seed is given (reproducible whatever the worker
    layout; call :meth:`set_epoch` each epoch, workers see it when they are (re)created).
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path,
        *,
        num_joints: int,
        input_size: int,
        encoder: TargetEncoder,
        flip_index: Sequence[int],
        augmentation: AugmentationSettings | None = None,
        scale_type: Literal["short", "long"] = "short",
        mask_policy: MaskPolicy = "coco",
        with_center: bool = False,
        scale_aware_sigma: ScaleAwareSigma | None = None,
        remove_images_without_annotations: bool = True,
        on_error: ErrorPolicy = "skip",
        seed: int | None = None,
    ) -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if len(flip_index) != num_joints:
            raise ValueError(f"flip_index has {len(flip_index)} entries for {num_joints} joints")
        if encoder.num_joints != num_joints:
            raise ValueError(f"encoder has {encoder.num_joints} joints, dataset {num_joints}")
        self.ann_file = Path(ann_file)
        self.image_dir = Path(image_dir)
        self.coco = load_annotations(self.ann_file)
        self.num_joints = num_joints
        self.input_size = int(input_size)
        self.encoder = encoder
        self.output_sizes = tuple(int(r) for r in encoder.output_sizes)
        self.flip_index = tuple(int(i) for i in flip_index)
        self.augmentation = augmentation
        self.scale_type = scale_type
        self.mask_policy: MaskPolicy = mask_policy
        self.with_center = with_center
        self.scale_aware_sigma = scale_aware_sigma
        self.on_error: ErrorPolicy = on_error
        self.seed = seed
        self.epoch = 0
        ids = list(self.coco.imgs.keys())
        if remove_images_without_annotations:
            ids = [i for i in ids if len(self.coco.getAnnIds(imgIds=i, iscrowd=None)) > 0]
        self.ids: list[int] = ids
        self.skipped: list[str] = []  # "path: reason" for every file skipped in this process
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def image_path(self, index: int) -> Path:
        info = self.coco.imgs[self.ids[index]]
        return self.image_dir / str(info["file_name"])

    # ---------------------------------------------------------------------------------------------
    # reading one image and its annotations

    def _annotations(self, index: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        img_id = self.ids[index]
        info = self.coco.imgs[img_id]
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=img_id))
        return info, anns

    def _where(self, index: int) -> str:
        return f"{self.ann_file} (image id {self.ids[index]})"

    def _read_image(self, index: int, info: dict[str, Any]) -> np.ndarray:
        path = self.image_path(index)
        try:
            image = read_rgb(path)
        except InputError as exc:
            raise _BadSample(str(path), str(exc)) from None
        if image.shape[:2] != (int(info["height"]), int(info["width"])):
            raise _BadSample(
                str(path),
                f"image is {image.shape[1]}x{image.shape[0]} but {self.ann_file.name} says "
                f"{info['width']}x{info['height']}",
            )
        return image

    def _num_keypoints(self, ann: dict[str, Any], where: str) -> int:
        if "num_keypoints" in ann:
            return int(ann["num_keypoints"])
        kp = ann.get("keypoints")
        if not isinstance(kp, list):
            raise _BadSample(where, f"annotation {ann.get('id')} has neither num_keypoints nor keypoints")
        return int(sum(1 for v in kp[2::3] if v > 0))

    def ignore_mask(self, info: dict[str, Any], anns: list[dict[str, Any]], where: str) -> np.ndarray:
        """(H, W) bool, False where the loss must ignore pixels (crowd regions, people without keypoints)."""
        from hhrnet.evaluate import segmentation_mask

        height, width = int(info["height"]), int(info["width"])
        if self.mask_policy == "none":
            return np.ones((height, width), dtype=bool)
        covered = np.zeros((height, width), dtype=bool)
        for ann in anns:
            crowd = bool(ann.get("iscrowd", 0))
            if not crowd and self._num_keypoints(ann, where) != 0:
                continue
            segm = ann.get("segmentation")
            if segm is None or (isinstance(segm, list) and len(segm) == 0):
                continue  # nothing to ignore
            try:
                mask = segmentation_mask(segm, height, width)
            except Exception as exc:  # pycocotools raises bare Exceptions / TypeErrors on bad input
                raise _BadSample(where, f"annotation {ann.get('id')} has an unreadable segmentation: {exc}") from None
            covered |= mask
        return ~covered

    def person_joints(self, anns: list[dict[str, Any]], where: str) -> np.ndarray:
        """(P, J, 3) ``[x, y, v]`` (or (P, J, 4) with the scale-aware sigma) of the kept annotations."""
        people = [a for a in anns if a.get("iscrowd", 0) == 0 or self._num_keypoints(a, where) > 0]
        labelled = self.num_joints - 1 if self.with_center else self.num_joints
        cols = 4 if self.scale_aware_sigma is not None else 3
        joints = np.zeros((len(people), self.num_joints, cols))
        for i, ann in enumerate(people):
            kp = ann.get("keypoints")
            try:
                values = np.asarray(kp, dtype=np.float64)
            except (TypeError, ValueError):
                values = None
            if values is None or values.shape != (3 * labelled,) or not np.all(np.isfinite(values)):
                got = "missing" if kp is None else f"{np.size(kp)} values" if values is not None else "non-numeric"
                raise _BadSample(
                    where, f"annotation {ann.get('id')} keypoints: expected {3 * labelled} numbers, got {got}"
                )
            joints[i, :labelled, :3] = values.reshape(labelled, 3)
            if self.with_center:
                visible = np.count_nonzero(joints[i, :-1, 2])
                if visible > 0:  # official: sum over all labelled xy / number of visible joints
                    joints[i, -1, :2] = joints[i, :-1, :2].sum(axis=0) / visible
                    joints[i, -1, 2] = 1
            if self.scale_aware_sigma is not None:
                sa = self.scale_aware_sigma
                box = ann.get("bbox")
                if not isinstance(box, list | tuple) or len(box) != 4:
                    raise _BadSample(where, f"annotation {ann.get('id')} needs a bbox for scale-aware sigma")
                sigma = max(float(box[2]), float(box[3])) / sa.base_size * sa.base_sigma
                if sa.int_sigma:
                    sigma = int(np.round(sigma + 0.5))
                if not sigma > 0:
                    raise _BadSample(where, f"annotation {ann.get('id')} has an empty bbox (sigma {sigma})")
                joints[i, :, 3] = sigma
        return joints

    # ---------------------------------------------------------------------------------------------
    # one training sample

    def _rng(self, index: int) -> tuple[Any, Any]:
        if self.seed is None:
            import random

            return np.random, random
        gen = np.random.default_rng((self.seed, self.epoch, index))
        return gen, gen

    def load_sample(self, index: int) -> dict[str, Any]:
        """The sample at ``index`` without skipping: InputError naming the file on any problem."""
        try:
            return self._load(index)
        except _BadSample as exc:
            raise InputError(str(exc)) from None

    def _load(self, index: int) -> dict[str, Any]:
        info, anns = self._annotations(index)
        where = self._where(index)
        image = self._read_image(index, info)
        mask = self.ignore_mask(info, anns, where)
        joints = self.person_joints(anns, where)
        size = (int(info["height"]), int(info["width"]))
        if self.augmentation is None:
            params = identity_params(size, self.scale_type)
        else:
            rng, flip_rng = self._rng(index)
            params = sample_affine_params(rng, size, self.augmentation, flip_rng)
        sample = apply_transform(
            image,
            mask,
            joints,
            params,
            self.input_size,
            self.output_sizes,
            self.flip_index,
            scale_aware_sigma=self.scale_aware_sigma is not None,
        )
        try:
            heatmaps, packed = self.encoder(sample.joints)
        except InputError as exc:  # overflow="raise" (docs/official.md B7)
            raise _BadSample(where, str(exc)) from None
        return {
            "image": torch.from_numpy(normalize_image(sample.image)),  # (3, S, S)
            "heatmaps": [torch.from_numpy(h) for h in heatmaps],  # (J, R, R) each
            "masks": [torch.from_numpy(m) for m in sample.masks],  # (R, R) each
            "joints": [torch.from_numpy(p.astype(np.int64, copy=False)) for p in packed],  # (MAXP, J, 2) each
            "image_id": int(self.ids[index]),
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.ids)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        skipped: list[str] = []
        for step in range(n):
            i = (index + step) % n
            if i in self._bad:
                continue
            try:
                item = self._load(i)
            except _BadSample as exc:
                if self.on_error == "raise":
                    raise InputError(str(exc)) from None
                self._bad.add(i)
                self.skipped.append(str(exc))
                skipped.append(str(exc))
                logger.warning("skipping %s", exc)
                continue
            item["skipped"] = tuple(skipped)
            return item
        raise InputError(f"no readable sample in {self.ann_file} ({len(self.skipped)} skipped: {self.skipped[:3]})")


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack items: image (B, 3, S, S); per output size heatmaps (B, J, R, R), masks (B, R, R),
    joints (B, MAXP, J, 2); image_id (B,) int64; skipped: every file skipped for this batch."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    sizes = len(items[0]["heatmaps"])
    return {
        "image": torch.stack([it["image"] for it in items]),
        "heatmaps": [torch.stack([it["heatmaps"][k] for it in items]) for k in range(sizes)],
        "masks": [torch.stack([it["masks"][k] for it in items]) for k in range(sizes)],
        "joints": [torch.stack([it["joints"][k] for it in items]) for k in range(sizes)],
        "image_id": torch.tensor([it["image_id"] for it in items], dtype=torch.int64),
        "skipped": [s for it in items for s in it.get("skipped", ())],
    }


def build_dataset(
    cfg: Config,
    split: Split,
    root: str | Path | None = None,
    *,
    ann_file: str | Path | None = None,
    image_dir: str | Path | None = None,
    augment: bool | None = None,
    on_error: ErrorPolicy = "skip",
    seed: int | None = None,
    overflow: Overflow = "compact",
) -> KeypointDataset:
    """The training (``split="train"``: augmented, images without annotations dropped) or validation
    (``"val"``: centre crop, every image) dataset of ``cfg``.

    Files: ``ann_file`` + ``image_dir`` when given, else found under ``root`` (default ``cfg.data.root``) for
    the split name ``cfg.data.train_split`` / ``cfg.data.test_split`` (see :func:`find_split_files`).
    """
    if split not in ("train", "val"):
        raise ConfigError(f"split must be 'train' or 'val', got {split!r}")
    data = cfg.data
    if data.data_format != "jpg":
        raise ConfigError(f"data.data_format={data.data_format!r} is not supported (only image files, 'jpg')")
    if (ann_file is None) != (image_dir is None):
        raise ConfigError("give both ann_file and image_dir, or neither")
    if ann_file is None or image_dir is None:
        base = Path(root if root is not None else data.root)
        ann_path, image_path = find_split_files(base, data.train_split if split == "train" else data.test_split)
    else:
        ann_path, image_path = Path(ann_file), Path(image_dir)
    train = split == "train"
    augment = train if augment is None else augment
    encoder = TargetEncoder(
        num_joints=data.num_joints,
        output_sizes=tuple(data.output_size),
        sigma=data.sigma,
        max_people=data.max_num_people,
        scale_aware_sigma=data.scale_aware_sigma,
        tag_per_joint=cfg.model.tag_per_joint,
        overflow=overflow,
    )
    sigma = ScaleAwareSigma(data.base_size, data.base_sigma, data.int_sigma) if data.scale_aware_sigma else None
    return KeypointDataset(
        ann_path,
        image_path,
        num_joints=data.num_joints,
        input_size=data.input_size,
        encoder=encoder,
        flip_index=data.flip_index,
        augmentation=data if augment else None,
        scale_type=data.scale_type,
        mask_policy="coco" if data.dataset == "coco" else "none",
        with_center=data.with_center,
        scale_aware_sigma=sigma,
        remove_images_without_annotations=train,
        on_error=on_error,
        seed=seed,
    )


__all__ = [
    "ErrorPolicy",
    "KeypointDataset",
    "ScaleAwareSigma",
    "build_dataset",
    "collate",
    "find_split_files",
    "load_annotations",
    "read_rgb",
]
