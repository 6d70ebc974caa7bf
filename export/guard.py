"""Accuracy-guarded int8: measure what quantizing each block of the network costs, then keep in float the fewest
blocks that bring the loss within a budget, and check that loss on images calibration did not see.

Steps (all on ONNX Runtime's CPU kernels, with ``onnxruntime.quantization``'s own machinery):

1. calibrate once: activation ranges over the calibration images, stored in ORT's calibration cache, so every
   later variant is the same quantization with a different ``nodes_to_quantize`` (no re-calibration);
2. blocks: each convolution with the residual Add / ReLU that follow it (merged by module path into at most
   :data:`MAX_BLOCKS` blocks on large networks, so the cost of the guard does not grow with the depth);
3. everything quantized is scored first; when that is within the budget nothing is kept and nothing more is
   measured. Otherwise, sensitivity: each block quantized alone, its relative output error (squared error /
   energy of every graph output, fp32 as reference) on the first :data:`PROXY_IMAGES` held-out images;
4. greedy by measured cost: blocks in decreasing sensitivity are kept in float, the number kept found by a
   doubling then bisecting search of the smallest prefix whose held-out loss is within the budget;
5. the loss, on the held-out images through the artifact's own pipeline (codec, graph, fast decoder):
   with annotations, the true AP drop (fp32 AP - int8 AP, points); without, a label-free estimate on the same
   scale: fp32's confident poses (score >= :data:`CONFIDENT` x their image's best) taken as ground truth, and
   fp32's AP at OKS 0.5 on them minus the variant's. On the trained demo model and 14 variants with true ΔAP
   from -1.2 to +37 points it read within 1.2 points of the true drop, where agreement AP (all of fp32's poses
   as ground truth, OKS 0.50:0.95) read 18 points for a variant that lost nothing
   (``benchmarks/int8_measure.py``).

Everything measured is rounded before it is recorded, and the search is deterministic, so the same images
and settings give the same file byte for byte.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hhrnet.errors import InputError

DEFAULT_MAX_AP_DROP = 0.5  # AP points
DEFAULT_HOLDOUT = 32  # held-out images scored per variant
PROXY_IMAGES = 4  # held-out images the per-block sensitivity is measured on
MAX_BLOCKS = 48  # blocks measured one by one (more convolutions are merged by module path)
CONFIDENT = 0.3  # label-free: fp32's poses scoring at least this fraction of their image's best are "people"
LABEL_FREE_STAT = "AP .5"  # label-free: scored at OKS 0.5 (finer levels mostly measure fp32's own error)
FEW_CALIBRATION = 16  # fewer calibration images than this: a warning
FEW_HOLDOUT = 16  # fewer held-out images than this: a warning
UNIFORM_SPREAD = 0.15  # image-to-image spread below this fraction of the within-image spread: "too uniform"
WEIGHTED = frozenset({"Conv", "ConvTranspose"})

Log = Callable[[str], None]


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Holdout:
    """Images the guard scores on (never used for calibration) and, when labelled, their ground truth."""

    images: list[np.ndarray]  # (H, W, 3) uint8 RGB each
    image_ids: list[int]
    annotations: dict[str, Any] | None  # COCO keypoint dict restricted to these images; None: label-free
    provenance: dict[str, Any]


def holdout_set(
    image_dir: str | Path, exclude: Sequence[str], count: int = DEFAULT_HOLDOUT, annotations: str | Path | None = None
) -> Holdout:
    """The first ``count`` images of ``image_dir`` (by name) that are not in ``exclude`` (the calibration files).

    With ``annotations`` (a COCO keypoint file) only images it lists are taken, under its image ids.
    """
    import hashlib
    import json

    from hhrnet.images import IMAGE_SUFFIXES, read_image

    root = Path(image_dir)
    if not root.is_dir():
        raise InputError(f"held-out image folder not found: {root}")
    if count < 1:
        raise InputError(f"the held-out image count must be positive, got {count}")
    skip = set(exclude)
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in skip)
    gt: dict[str, Any] | None = None
    ids: dict[str, int] = {}
    if annotations is not None:
        path = Path(annotations)
        if not path.is_file():
            raise InputError(f"annotation file not found: {path}")
        try:
            gt = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{path} is not JSON: {exc}") from None
        if not isinstance(gt, dict) or not isinstance(gt.get("images"), list):
            raise InputError(f"{path} is not a COCO keypoint file (no images list)")
        ids = {Path(im["file_name"]).name: int(im["id"]) for im in gt["images"]}
        files = [p for p in files if p.name in ids]
    files = files[:count]
    if not files:
        raise InputError(
            f"no held-out images in {root}: every image there is a calibration image"
            + (" or missing from the annotations" if annotations is not None else "")
            + "; give more images, --guard-images FOLDER, or --no-guard"
        )
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.name.encode() + b"\0")
    image_ids = [ids[p.name] if ids else i for i, p in enumerate(files)]
    subset = None
    if gt is not None:
        keep = set(image_ids)
        subset = {
            "images": [im for im in gt["images"] if int(im["id"]) in keep],
            "annotations": [a for a in gt.get("annotations", []) if a.get("image_id") in keep],
            "categories": gt.get("categories", []),
        }
    provenance = {
        "images": str(root),
        "count": len(files),
        "labels": str(annotations) if annotations else None,
        "sha256": digest.hexdigest(),
    }
    return Holdout([read_image(p) for p in files], image_ids, subset, provenance)


def calibration_warnings(inputs: Sequence[np.ndarray]) -> list[str]:
    """Why a calibration set may be unrepresentative: too few images, or images too much alike.

    "Alike" compares the spread between images (std over images of 8x8 colour thumbnails) with the spread
    inside them: identical or near-identical images give ranges that fit them and nothing else.
    """
    warnings = []
    n = len(inputs)
    if n < FEW_CALIBRATION:
        warnings.append(
            f"only {n} calibration images (fewer than {FEW_CALIBRATION}): activation ranges may not "
            "cover real inputs; give more with --calib-images / --calib-count"
        )
    if n >= 2:
        thumbs = np.stack([_thumbnail(x[0]) for x in inputs])  # (N, 3, 8, 8)
        between = float(thumbs.std(axis=0).mean())
        within = float(np.mean([x[0].std() for x in inputs]))
        if within > 0 and between < UNIFORM_SPREAD * within:
            warnings.append(
                f"the {n} calibration images are nearly uniform (image-to-image spread {between:.3f} vs "
                f"{within:.3f} within an image): ranges fitted to them may clip other scenes"
            )
    return warnings


def holdout_warnings(holdout: Holdout) -> list[str]:
    """Why the guard's held-out estimate may be noisy."""
    n = len(holdout.images)
    if n < FEW_HOLDOUT:
        return [
            f"only {n} held-out images scored the guard (fewer than {FEW_HOLDOUT}): its AP estimate is noisy; "
            "give more images or --guard-images FOLDER"
        ]
    return []


def _thumbnail(x: np.ndarray) -> np.ndarray:
    """(3, S, S) -> (3, 8, 8) block means."""
    c, h, w = x.shape
    bh, bw = h // 8, w // 8
    return x[:, : bh * 8, : bw * 8].reshape(c, 8, bh, 8, bw).mean(axis=(2, 4))


# --------------------------------------------------------------------------------------------
# blocks
# --------------------------------------------------------------------------------------------


def blocks(graph: Any, nodes: Sequence[str], max_blocks: int = MAX_BLOCKS) -> list[tuple[str, list[str]]]:
    """Quantizable ``nodes`` grouped into (name, node names) blocks, in graph order.

    Each convolution starts a block; an Add or ReLU joins the block of the first of its inputs' producers
    that has one (the residual Add and the ReLU after a convolution). Past ``max_blocks`` blocks, blocks
    whose first node shares a module path (node name up to depth d, the deepest d that fits) are merged.
    """
    wanted = set(nodes)
    producer: dict[str, str] = {}
    owner: dict[str, int] = {}
    units: list[list[str]] = []
    for n in graph.node:
        for out in n.output:
            producer[out] = n.name
        if n.name not in wanted:
            continue
        if n.op_type in WEIGHTED:
            owner[n.name] = len(units)
            units.append([n.name])
            continue
        home = next((owner[producer[i]] for i in n.input if i in producer and producer[i] in owner), None)
        if home is None:
            owner[n.name] = len(units)
            units.append([n.name])
        else:
            owner[n.name] = home
            units[home].append(n.name)
    depth = max((len(u[0].split("/")) for u in units), default=1)
    while depth > 1:
        keys = {"/".join(u[0].split("/")[:depth]) for u in units}
        if len(keys) <= max_blocks:
            break
        depth -= 1
    merged: dict[str, list[str]] = {}
    for u in units:
        key = "/".join(u[0].split("/")[:depth]) if len(units) > max_blocks else u[0]
        merged.setdefault(key, []).extend(u)
    return list(merged.items())


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------


class _Net:
    """A network callable over an in-memory ONNX model (ONNX Runtime, CPU)."""

    def __init__(self, model: Any, graph: str) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.graph = graph

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return list(self.session.run(None, {self.input_name: x}))


COCO_MAX_DETS = 20  # detections per image that COCO keypoint evaluation scores (COCOeval maxDets)


def as_ground_truth(
    results: Sequence[Mapping[str, Any]],
    images: Sequence[Mapping[str, Any]],
    categories: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Predictions as a COCO ground-truth dict (box and area of each person from its keypoints).

    Only what COCO scores of them: each image's ``COCO_MAX_DETS`` best poses (COCOeval keeps that many detections
    per image, the highest scores first, ties in the given order). More would be people the same predictions,
    scored as detections, can never find: identical predictions would agree below 1."""
    count: dict[Any, int] = {}
    scored = set()
    for i in sorted(range(len(results)), key=lambda k: -float(results[k]["score"])):  # stable, as COCOeval's sort
        count[results[i]["image_id"]] = n = count.get(results[i]["image_id"], 0) + 1
        if n <= COCO_MAX_DETS:
            scored.add(i)
    anns = []
    for i, r in enumerate(results):
        if i not in scored:
            continue
        x, y, w, h = r["bbox"]
        kps = list(r["keypoints"])
        for j in range(2, len(kps), 3):
            kps[j] = 2 if kps[j] > 0 else 0
        anns.append(
            {
                "id": i + 1,
                "image_id": r["image_id"],
                "category_id": 1,
                "iscrowd": 0,
                "keypoints": kps,
                "num_keypoints": sum(1 for v in kps[2::3] if v > 0),
                "bbox": [x, y, max(w, 1), max(h, 1)],
                "area": max(w, 1) * max(h, 1),
            }
        )
    cats = [dict(c) for c in categories] if categories else [{"id": 1, "name": "person"}]
    return {"images": [dict(im) for im in images], "annotations": anns, "categories": cats}


def agreement_ap(
    results: Sequence[dict[str, Any]],
    reference: Sequence[dict[str, Any]],
    images: Sequence[dict[str, Any]],
    dataset: str,
) -> float:
    """AP of ``results`` scored against ``reference``'s poses as ground truth (1.0 when the reference is empty)."""
    from hhrnet.evaluate import evaluate_predictions

    gt = as_ground_truth(reference, images)
    if not gt["annotations"]:
        return 1.0
    with contextlib.redirect_stdout(io.StringIO()):
        return float(evaluate_predictions(list(results), gt, dataset)["AP"])


def confident_poses(
    reference: Sequence[Mapping[str, Any]], images: Sequence[Mapping[str, Any]], confident: float = CONFIDENT
) -> dict[str, Any]:
    """fp32's confident poses as a COCO ground truth: those scoring at least ``confident`` x their image's best.

    The low-score tail of a bottom-up model's output is mostly not people; as ground truth it would count every
    reshuffle of that tail as a loss (the agreement AP's ~20x overstatement on the trained demo model).
    """
    best: dict[int, float] = {}
    for r in reference:
        best[r["image_id"]] = max(best.get(r["image_id"], 0.0), float(r["score"]))
    return as_ground_truth([r for r in reference if float(r["score"]) >= confident * best[r["image_id"]]], images)


def _ap(results: Sequence[dict[str, Any]], annotations: dict[str, Any], dataset: str, stat: str = "AP") -> float:
    from hhrnet.evaluate import evaluate_predictions

    if not annotations["annotations"]:
        return 1.0
    with contextlib.redirect_stdout(io.StringIO()):
        return float(evaluate_predictions(list(results), annotations, dataset)[stat])


class Scorer:
    """Loss in AP points of a variant against the fp32 model on the held-out images."""

    def __init__(self, fp32: Any, codec: Any, graph: str, holdout: Holdout) -> None:
        self.codec = codec
        self.graph = graph
        self.holdout = holdout
        self.labelled = holdout.annotations is not None
        self.images_meta = [
            {"id": i, "height": int(im.shape[0]), "width": int(im.shape[1])}
            for i, im in zip(holdout.image_ids, holdout.images, strict=True)
        ]
        self.reference = self.poses(fp32)
        # with labels: the labels; without: fp32's confident poses, scored at OKS 0.5
        self.truth: dict[str, Any] = holdout.annotations or confident_poses(self.reference, self.images_meta)
        self.stat = "AP" if holdout.annotations is not None else LABEL_FREE_STAT
        self.base = _ap(self.reference, self.truth, codec.dataset, self.stat)

    def poses(self, model: Any) -> list[dict[str, Any]]:
        from hhrnet.evaluate import result_entries
        from hhrnet.inference import Predictor

        predictor = Predictor(_Net(model, self.graph), self.codec, graph=self.graph)
        results: list[dict[str, Any]] = []
        for image_id, image in zip(self.holdout.image_ids, self.holdout.images, strict=True):
            poses = predictor.predict(image)
            results.extend(result_entries(image_id, poses.keypoints, poses.scores))
        return results

    def score(self, model: Any) -> dict[str, float]:
        """{"loss": AP points lost (negative: gained), "agreement": agreement AP, "AP": with labels only}.

        Without labels the loss is the drop of AP at OKS 0.5 against fp32's confident poses
        (:func:`confident_poses`), fp32's own score on them minus the variant's."""
        return self.score_poses(self.poses(model))

    def score_poses(self, results: Sequence[dict[str, Any]]) -> dict[str, float]:
        """:meth:`score` of poses already computed on the held-out images."""
        agreement = agreement_ap(results, self.reference, self.images_meta, self.codec.dataset)
        ap = _ap(results, self.truth, self.codec.dataset, self.stat)
        out = {"loss": round((self.base - ap) * 100, 4), "agreement": round(agreement, 5)}
        if self.labelled:
            out["AP"] = round(ap, 5)
        return out


def output_error(model: Any, graph: str, inputs: Sequence[np.ndarray], reference: Sequence[list[np.ndarray]]) -> float:
    """Mean over inputs and outputs of squared error / energy of the reference output."""
    net = _Net(model, graph)
    errors = []
    for x, ref in zip(inputs, reference, strict=True):
        for r, g in zip(ref, net(x), strict=True):
            errors.append(
                float(np.sum((g.astype(np.float64) - r) ** 2) / max(float(np.sum(r.astype(np.float64) ** 2)), 1e-30))
            )
    return float(np.mean(errors))


# --------------------------------------------------------------------------------------------
# quantization with ranges calibrated once
# --------------------------------------------------------------------------------------------


@dataclass
class Quantizer:
    """``onnxruntime.quantization.quantize_static`` with its activation ranges calibrated once (ORT's cache)."""

    model: Any  # fp32 ModelProto
    inputs: Sequence[np.ndarray]  # calibration network inputs
    settings: dict[str, Any]  # quantize_static keyword arguments except the node selection
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="hhrnet-int8-")))

    def __post_init__(self) -> None:
        import onnx

        self.src = self.tmp / "fp32.onnx"
        self.cache = self.tmp / "ranges.json"
        onnx.save(self.model, str(self.src))

    def __call__(self, nodes: Sequence[str]) -> Any:
        """The model with exactly ``nodes`` quantized (the fp32 model itself when ``nodes`` is empty)."""
        import onnx
        from onnxruntime.quantization import CalibrationDataReader, quantize_static

        if not nodes:
            return self.model

        class Reader(CalibrationDataReader):  # type: ignore[misc]
            def __init__(self, name: str, inputs: Sequence[np.ndarray]) -> None:
                self.name, self.it = name, iter(list(inputs))

            def get_next(self) -> dict[str, np.ndarray] | None:
                x = next(self.it, None)
                return None if x is None else {self.name: x}

        reader = None if self.cache.is_file() else Reader(self.model.graph.input[0].name, self.inputs)
        dst = self.tmp / "int8.onnx"
        with contextlib.redirect_stdout(io.StringIO()), _quiet_root_logger():
            quantize_static(
                str(self.src),
                str(dst),
                reader,
                nodes_to_quantize=list(nodes),
                calibration_cache_path=str(self.cache),
                **self.settings,
            )
        return onnx.load(str(dst))

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.contextmanager
def _quiet_root_logger() -> Any:
    """onnxruntime.quantization logs advice on the root logger at WARNING; keep it for errors meanwhile."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def float_summary(artifact: Any) -> list[str]:
    """Lines saying what an int8 guard kept in float, why, and what it measured (empty without a guard)."""
    g = artifact.extra.get("guard")
    if not g:
        return []
    res, full = g["result"], g.get("all_quantized") or {}
    what = "AP loss" if "AP" in res else "estimated AP loss"  # positive: the int8 file scores lower
    dtype = g.get("kept_dtype", "fp32")
    lines = [
        f"int8 guard ({g['measure']}; budget {g['max_ap_drop']} AP points, {g['holdout']['count']} held-out "
        f"images): {len(g['kept'])} of {g['blocks']} blocks kept in {dtype}; {what} {res['loss']:+.2f} points, "
        f"agreement AP {res['agreement']:.3f}"
        + (f" (all quantized: {full['loss']:+.2f} points, agreement {full['agreement']:.3f})" if full else "")
        + ("" if g["within_budget"] else " -- NOT within the budget")
    ]
    for b in g["kept"]:
        lines.append(
            f"  kept in {dtype}: {b['block']} ({len(b['nodes'])} nodes, quantized alone: relative output "
            f"error {b['cost']:.3g})"
        )
    return lines


# --------------------------------------------------------------------------------------------
# the guard
# --------------------------------------------------------------------------------------------


@dataclass
class GuardResult:
    model: Any  # the chosen quantized ModelProto
    kept: list[str]  # node names left in float
    record: dict[str, Any]  # what goes into the contract (``extra["guard"]``)


def guard(
    quantize: Quantizer,
    nodes: Sequence[str],
    scorer: Scorer,
    proxy_inputs: Sequence[np.ndarray],
    *,
    max_ap_drop: float = DEFAULT_MAX_AP_DROP,
    graph: str = "raw",
    max_blocks: int = MAX_BLOCKS,
    log: Log | None = None,
) -> GuardResult:
    """Keep in float the fewest most-sensitive blocks of ``nodes`` whose held-out loss is within ``max_ap_drop``."""
    say = log or (lambda _: None)
    units = blocks(quantize.model.graph, nodes, max_blocks)
    cost: dict[str, float] = {}  # measured only when quantizing everything is not within the budget
    order: list[int] = []  # block indices, most sensitive first
    trials: dict[int, dict[str, float]] = {}
    models: dict[int, Any] = {}

    def trial(k: int) -> bool:
        """Keep the k most sensitive blocks in float; within the budget?"""
        if k not in trials:
            excluded = {n for i in order[:k] for n in units[i][1]}
            models[k] = quantize([n for n in nodes if n not in excluded])
            trials[k] = scorer.score(models[k])
            say(
                f"guard: {k} block(s) in float -> loss {trials[k]['loss']:+.2f} points, agreement "
                f"{trials[k]['agreement']:.3f}"
            )
        return trials[k]["loss"] <= max_ap_drop

    hi = 0
    if not trial(0) and units:
        reference = [_Net(quantize.model, graph)(x) for x in proxy_inputs]
        say(f"guard: sensitivity of {len(units)} blocks on {len(proxy_inputs)} held-out images ...")
        cost.update(
            {
                name: float(f"{output_error(quantize(members), graph, proxy_inputs, reference):.4g}")
                for name, members in units
            }
        )
        order.extend(sorted(range(len(units)), key=lambda i: (-cost[units[i][0]], i)))  # stable
        # doubling then bisection for the smallest k within the budget (k = all blocks is fp32: always within)
        lo, hi = 0, 1
        while not trial(hi) and hi < len(units):
            lo, hi = hi, min(len(units), 2 * hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if trial(mid):
                hi = mid
            else:
                lo = mid
    kept_blocks = [units[i] for i in order[:hi]]
    kept = [n for _, members in kept_blocks for n in members]
    record = {
        "max_ap_drop": max_ap_drop,
        "measure": "AP drop vs fp32 on labelled held-out images"
        if scorer.labelled
        else f"label-free estimate: AP at OKS 0.5 against fp32's confident poses (>= {CONFIDENT} x the image's best)",
        "blocks": len(units),
        "kept": [{"block": name, "nodes": members, "cost": cost[name]} for name, members in kept_blocks],
        "result": trials[hi],
        "all_quantized": trials.get(0),
        "within_budget": trials[hi]["loss"] <= max_ap_drop,
        "sensitivity": {units[i][0]: cost[units[i][0]] for i in order[: min(8, len(order))]},  # {}: not needed
        "trials": {str(k): v for k, v in sorted(trials.items())},
    }
    return GuardResult(models[hi], kept, record)
