"""Keypoint AP with the official settings (docs/official.md §9): COCO through pycocotools, CrowdPose on the same
engine with CrowdPose's rules.

* Results: one entry per person ``{image_id, category_id: 1, keypoints: 3J floats, score, bbox}`` with the
  bbox the min/max box of the keypoints, as the official writer; no OKS-NMS (``keep = []`` officially).
* COCO: ``COCOeval(gt, dt, 'keypoints')``, default sigmas, maxDets 20, OKS area = GT ``area``.
* CrowdPose: the 14 CrowdPose sigmas, OKS area = GT bbox w*h*0.53, maxDets 20, and AP easy / medium /
  hard re-evaluated on the images with crowdIndex < 0.2 / in [0.2, 0.8) / >= 0.8 (crowdposetools' rule).
  crowdposetools is not on PyPI; its evaluator is pycocotools' with those three changes.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hhrnet.datasets import CROWDPOSE, dataset_facts
from hhrnet.errors import InputError

if TYPE_CHECKING:
    from hhrnet.codec import Codec

COCO_STATS = ("AP", "AP .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)")
CROWDPOSE_STATS = ("AP", "AP .5", "AP .75", "AR", "AR .5", "AR .75", "AP (E)", "AP (M)", "AP (H)")


def result_entries(image_id: int, keypoints: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
    """Official results-file entries for one image (keypoints (P, J, 3) in image pixels)."""
    out = []
    for kp, score in zip(keypoints, scores, strict=True):
        xy = kp[:, :2]
        x0, y0 = float(xy[:, 0].min()), float(xy[:, 1].min())
        x1, y1 = float(xy[:, 0].max()), float(xy[:, 1].max())
        out.append(
            {
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "category_id": 1,
                "image_id": int(image_id),
                "keypoints": [float(v) for v in kp[:, :3].reshape(-1)],
                "score": float(score),
            }
        )
    return out


def write_results(path: str | Path, results: Sequence[Mapping[str, Any]]) -> Path:
    from hhrnet.io import atomic_write_text

    return atomic_write_text(path, json.dumps(list(results), sort_keys=True, indent=4))


def _load_json(path: str | Path, what: str) -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"{what} not found: {p}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {what} {p}: {exc}") from None


def _gt(ann: str | Path | Mapping[str, Any], dataset: str) -> Any:
    from pycocotools.coco import COCO

    data = copy.deepcopy(dict(ann)) if isinstance(ann, Mapping) else _load_json(ann, "annotation file")
    source = str(ann) if not isinstance(ann, Mapping) else "annotations"
    if not isinstance(data, dict) or not {"images", "annotations"} <= set(data):
        raise InputError(f"{source} is not a COCO keypoint file")
    _check_ground_truth(data, source, dataset_facts(dataset).num_joints)
    data.setdefault("categories", [{"id": 1, "name": "person"}])
    for a in data["annotations"]:
        if dataset == CROWDPOSE.name:
            x, y, w, h = a["bbox"]
            a["area"] = w * h * 0.53  # CrowdPose's OKS area
        elif "area" not in a:
            a["area"] = a["bbox"][2] * a["bbox"][3]
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _evaluate(
    gt: Any, results: list[dict[str, Any]], sigmas: np.ndarray | None, img_ids: Iterable[int] | None, max_dets: int
) -> np.ndarray:
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results) if results else _empty_res(gt)
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.useSegm = None
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = sigmas
        ev.params.maxDets = [max_dets]
        if img_ids is not None:
            ev.params.imgIds = sorted(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def _empty_res(gt: Any) -> Any:
    from pycocotools.coco import COCO

    dt = COCO()
    dt.dataset = {"images": gt.dataset["images"], "annotations": [], "categories": gt.dataset["categories"]}
    dt.createIndex()
    return dt


class Stats(dict[str, float]):
    """The official stats by name, plus ``warnings`` about predictions the ground truth cannot score."""

    warnings: list[str]

    def __init__(self, values: Iterable[tuple[str, float]] = (), warnings: Sequence[str] = ()) -> None:
        super().__init__(values)
        self.warnings = list(warnings)


MAX_ABS_VALUE = 1e9  # a keypoint coordinate or score beyond this is no pixel position or confidence


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_results(dets: Any, source: str, num_joints: int) -> list[dict[str, Any]]:
    """Results entries with J*3 finite keypoint values and a finite score each; InputError naming the first bad
    entry (pycocotools would score NaN keypoints as a perfect match and rank NaN scores arbitrarily)."""
    if not isinstance(dets, list):
        raise InputError(f"{source} is not a keypoint results list (expected a JSON list of detections)")
    for i, d in enumerate(dets):
        if not isinstance(d, dict):
            raise InputError(f"{source}: entry {i} is not a JSON object")
        missing = [k for k in ("image_id", "keypoints", "score") if k not in d]
        if missing:
            raise InputError(f"{source}: entry {i} lacks {', '.join(missing)}")
        kp = d["keypoints"]
        if not isinstance(kp, list) or len(kp) != 3 * num_joints:
            n = len(kp) if isinstance(kp, list) else type(kp).__name__
            raise InputError(
                f"{source}: entry {i} has {n} keypoint values; this dataset needs {3 * num_joints} "
                f"({num_joints} joints x (x, y, score))"
            )
        if not all(_number(v) for v in kp) or not _number(d["score"]):
            raise InputError(f"{source}: entry {i} has non-numeric keypoints or score")
        values = np.asarray([*kp, d["score"]], np.float64)
        if not np.isfinite(values).all():
            raise InputError(f"{source}: entry {i} has non-finite (NaN or inf) keypoints or score")
        if np.abs(values).max() > MAX_ABS_VALUE:
            raise InputError(f"{source}: entry {i} has a keypoint or score beyond +-{MAX_ABS_VALUE:g}")
    return [dict(d) for d in dets]


def _check_ground_truth(data: Any, source: str, num_joints: int) -> None:
    """InputError naming the problem when the ground truth cannot give a meaningful AP: no annotations, or
    annotations without J*3 finite keypoints, a bbox or an image id."""
    anns = data.get("annotations")
    if not isinstance(anns, list) or not isinstance(data.get("images"), list):
        raise InputError(f"{source} is not a COCO keypoint file (images and annotations lists needed)")
    if not anns:
        raise InputError(f"{source} has no annotations: AP is undefined (pycocotools would print -1)")
    for i, a in enumerate(anns):
        if not isinstance(a, dict):
            raise InputError(f"{source}: annotation {i} is not a JSON object")
        missing = [k for k in ("image_id", "keypoints", "bbox") if k not in a]
        if missing:
            raise InputError(f"{source}: annotation {i} lacks {', '.join(missing)}")
        kp, box = a["keypoints"], a["bbox"]
        if not isinstance(kp, list) or len(kp) != 3 * num_joints or not all(_number(v) for v in kp):
            raise InputError(f"{source}: annotation {i} needs {3 * num_joints} numeric keypoint values")
        if not isinstance(box, list) or len(box) != 4 or not all(_number(v) for v in box):
            raise InputError(f"{source}: annotation {i} needs a bbox of 4 numbers")
        if not np.isfinite(np.asarray([*kp, *box], np.float64)).all():
            raise InputError(f"{source}: annotation {i} has non-finite keypoints or bbox")
    if not any(isinstance(a.get("num_keypoints", 1), int | float) and a.get("num_keypoints", 1) > 0 for a in anns):
        raise InputError(f"{source} has no annotation with labelled keypoints: AP is undefined")


def evaluate_predictions(
    results: str | Path | Sequence[Mapping[str, Any]],
    annotations: str | Path | Mapping[str, Any],
    dataset: str = "coco",
) -> Stats:
    """Score a results file (or list) against ground truth; the official stats by name.

    Predictions for images the ground truth does not have are left out and reported in ``warnings``, as is
    an empty list (AP 0 is then the right answer, but rarely the intended one).
    """
    facts = dataset_facts(dataset)
    source = str(results) if isinstance(results, str | Path) else "results"
    raw = _load_json(results, "results file") if isinstance(results, str | Path) else list(results)
    dets = _check_results(raw, source, facts.num_joints)
    gt = _gt(annotations, dataset)
    known = set(gt.getImgIds())
    warnings: list[str] = []
    if not dets:
        warnings.append(f"{source} holds no detections: every AP is 0")
    unknown = sorted({d["image_id"] for d in dets} - known, key=str)
    if unknown:
        shown = ", ".join(map(str, unknown[:5])) + (", ..." if len(unknown) > 5 else "")
        matched = sum(d["image_id"] in known for d in dets)
        warnings.append(
            f"{len(dets) - matched} of {len(dets)} detections refer to {len(unknown)} image ids the ground truth "
            f"does not have ({shown}); they are not scored"
            + ("; NOTHING matched the ground truth" if not matched else "")
        )
    dets = [dict(d, category_id=1) for d in dets if d["image_id"] in known]
    if facts is not CROWDPOSE:  # COCO: pycocotools' own sigmas (the same values)
        stats = _evaluate(gt, dets, None, None, 20)
        return Stats(zip(COCO_STATS, (float(s) for s in stats), strict=True), warnings)
    sigmas = np.asarray(CROWDPOSE.oks_sigmas)
    stats = _evaluate(gt, dets, sigmas, None, 20)
    out = Stats(zip(("AP", "AP .5", "AP .75"), (float(s) for s in stats[:3]), strict=True), warnings)
    out.update(zip(("AR", "AR .5", "AR .75"), (float(s) for s in stats[5:8]), strict=True))
    index = {img["id"]: float(img.get("crowdIndex", 0.0)) for img in gt.dataset["images"]}
    for name, test in (
        ("AP (E)", lambda c: c < 0.2),
        ("AP (M)", lambda c: 0.2 <= c < 0.8),
        ("AP (H)", lambda c: c >= 0.8),
    ):
        ids = [i for i, c in index.items() if test(c)]
        out[name] = float(_evaluate(gt, dets, sigmas, ids, 20)[0]) if ids else float("nan")
    return out


def segmentation_mask(segm: Any, height: int, width: int) -> np.ndarray:
    """(height, width) bool mask of a COCO segmentation: polygons (a list, all parts joined) or RLE (compressed
    or not). pycocotools' own errors (bare Exceptions, TypeErrors) pass through for the caller to name."""
    import warnings

    import pycocotools.mask as mask_utils

    compressed = isinstance(segm, dict) and isinstance(segm.get("counts"), str)
    rles = segm if compressed else mask_utils.frPyObjects(segm, height, width)
    with warnings.catch_warnings():  # pycocotools' NumPy-2 copy= DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = mask_utils.decode(rles)
    return decoded.any(axis=2) if decoded.ndim == 3 else decoded.astype(bool)


def figure_mixing(
    results: Sequence[Mapping[str, Any]],
    annotations: Mapping[str, Any],
    dataset: str = "coco",
    *,
    min_score: float = 0.0,
    joint_threshold: float = 0.1,
    reach: int = 1,
) -> dict[str, int]:
    """How many predicted poses join two or more people: what a drawing shows as a skeleton across figures.

    Not an official measure. Each pose scoring at least ``min_score`` is taken with the joints a drawing shows
    (score above ``joint_threshold``, :func:`hhrnet.visualize.draw_poses`). A joint belongs to the labelled
    person whose same joint it matches (OKS keypoint similarity ``exp(-d^2 / (2 * area * (2 * sigma)^2)) >= 0.5``,
    the nearest; occluded joints are labelled too), else to the person whose visible outline (segmentation)
    covers a pixel within ``reach`` pixels of it, labelled or not (COCO and the built-in data outline people too
    small to carry keypoints); a joint near no person, or on several outlines where figures overlap, says
    nothing. A pose *joins figures* when its joints belong to two or more people. Returns ``poses`` (counted),
    ``joining`` (of those) and ``images`` (with at least one joining pose).
    """
    facts = dataset_facts(dataset)
    k2 = (2 * np.asarray(facts.oks_sigmas, dtype=np.float64)) ** 2  # (J,)
    sizes = {im["id"]: (int(im["height"]), int(im["width"])) for im in annotations.get("images", [])}
    # image id -> its non-crowd people: (outline or None, labelled keypoints (J, 3) or None, OKS area)
    people: dict[Any, list[tuple[np.ndarray | None, np.ndarray | None, float]]] = {}
    for a in annotations.get("annotations", []):
        hw = sizes.get(a.get("image_id"))
        if a.get("iscrowd", 0) or hw is None:
            continue
        outline = segmentation_mask(a["segmentation"], *hw) if a.get("segmentation") else None
        kp = np.asarray(a.get("keypoints") or np.zeros(3 * len(k2)), dtype=np.float64).reshape(-1, 3)
        labelled = kp if len(kp) == len(k2) and (kp[:, 2] > 0).any() else None
        area = float(a["bbox"][2] * a["bbox"][3] * 0.53) if facts is CROWDPOSE else float(a.get("area", 0.0))
        people.setdefault(a["image_id"], []).append((outline, labelled, max(area, 1e-9)))
    poses = joining = 0
    images: set[Any] = set()
    for r in results:
        if r["score"] < min_score:
            continue
        poses += 1
        here = people.get(r["image_id"], [])
        kp = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)
        owners: set[int] = set()
        for j in np.flatnonzero(kp[:, 2] > joint_threshold):
            best, owner = 0.5, -1  # keypoint similarity must reach 0.5
            for n, (_, gt, area) in enumerate(here):
                if gt is not None and gt[j, 2] > 0:
                    ks = float(np.exp(-((gt[j, :2] - kp[j, :2]) ** 2).sum() / (2 * area * k2[j])))
                    if ks >= best:
                        best, owner = ks, n
            if owner < 0:
                col, row = int(round(kp[j, 0])), int(round(kp[j, 1]))
                window = (slice(max(row - reach, 0), row + reach + 1), slice(max(col - reach, 0), col + reach + 1))
                near = [n for n, (m, _, _) in enumerate(here) if m is not None and m[window].any()]
                owner = near[0] if len(near) == 1 else -1
            if owner >= 0:
                owners.add(owner)
        if len(owners) > 1:
            joining += 1
            images.add(r["image_id"])
    return {"poses": poses, "joining": joining, "images": len(images)}


@dataclass
class EvalResult:
    stats: Stats
    results: list[dict[str, Any]]
    failures: list[tuple[str, str]] = field(default_factory=list)
    images: int = 0


def evaluate_model(
    network: Callable[[np.ndarray], Sequence[np.ndarray]],
    codec: Codec,
    image_dir: str | Path,
    ann_file: str | Path,
    *,
    max_images: int | None = None,
    decoder: str = "fast",
    graph: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Run the test pipeline over a COCO/CrowdPose split and score it.

    ``codec`` is the contract to run with (:func:`hhrnet.codec.resolve_codec`); ``graph`` says what ``network``
    returns (default: its ``graph`` or raw).
    """
    from hhrnet.images import read_image
    from hhrnet.inference import Predictor

    data = _load_json(ann_file, "annotation file")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(f"{ann_file} is not a COCO keypoint file (no images list)")
    images = list(data["images"])[: max_images if max_images is not None else None]
    subset = dict(data, images=images)
    ids = {im["id"] for im in images}
    subset["annotations"] = [a for a in data.get("annotations", []) if a.get("image_id") in ids]
    predictor = Predictor(network, codec, decoder=decoder, graph=graph)  # type: ignore[arg-type]
    results: list[dict[str, Any]] = []
    failures: list[tuple[str, str]] = []
    for i, im in enumerate(images):
        path = Path(image_dir) / im["file_name"]
        try:
            poses = predictor.predict(read_image(path, fits=codec.check_size))  # bounded before decoding
        except InputError as exc:
            failures.append((str(path), str(exc)))
        else:
            results.extend(result_entries(im["id"], poses.keypoints, poses.scores))
        if progress is not None:
            progress(i + 1, len(images))
    stats = evaluate_predictions(results, subset, codec.dataset)
    return EvalResult(stats=stats, results=results, failures=failures, images=len(images))
