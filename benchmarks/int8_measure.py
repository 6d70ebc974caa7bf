"""Which label-free int8 loss tracks the true AP drop: int8 variants with a range of true ΔAP, each scored by
every candidate measure on the same held-out images.

Variants differ in calibration (method, percentile, image count) and in the blocks kept in float, so their true
ΔAP spreads from about nothing to several points. For each the poses on the held-out images are computed once;
the true ΔAP (against the annotations) and each label-free candidate (from fp32's and the variant's poses only)
come from those same poses. Candidates:

* ``agreement``: the variant's poses scored against all of fp32's poses as ground truth, OKS 0.5:0.95 (the
  guard's label-free measure before; it read ~18 points for int8 files that lost nothing);
* ``agreement50``: the same at OKS 0.5 only;
* ``confidentF`` / ``confidentF_50``: ground truth = fp32's confident poses (score >= F x the image's best);
  fp32's full output scored against it minus the variant's, OKS 0.5:0.95 / OKS 0.5 only. ``confident0.3_50``
  is the guard's label-free measure (:class:`hhrnet.export.guard.Scorer`);
* ``tolerantK``: agreement with the OKS sigmas widened K times;
* ``simulated``: fp32's confident poses moved by Gaussian offsets sized to an expected OKS of 0.8 (a stand-in
  for real labels' distance from the model), 4 draws, OKS 0.5:0.95.

Run: ``python -m hhrnet.benchmarks.int8_measure FP32_ONNX CALIB_DIR IMAGE_DIR ANNOTATIONS OUT_JSON [COUNT]``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hhrnet.datasets import COCO, dataset_facts
from hhrnet.export.guard import as_ground_truth


def _stats(results: Sequence[dict[str, Any]], gt: dict[str, Any], sigmas: np.ndarray | None = None) -> np.ndarray:
    from pycocotools.coco import COCO

    from hhrnet.evaluate import _evaluate

    if not gt["annotations"]:
        return np.ones(10)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
    return _evaluate(coco, [dict(r, category_id=1) for r in results], sigmas, None, 20)


def simulated_labels(
    reference: Sequence[Mapping[str, Any]],
    images: Sequence[Mapping[str, Any]],
    dataset: str,
    *,
    confident: float = 0.5,
    label_oks: float = 0.8,
    draws: int = 4,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Stand-in ground truths made from fp32's own poses (a candidate the guard did not take: it overstates).

    Real labels differ from a good model's poses by the model's own error, so a few pixels of int8 jitter barely
    move the true AP; scoring int8 against fp32's poses themselves (agreement AP) counts every pixel at OKS 0.95
    and reads ~20x the true drop. Here each of ``draws`` ground truths holds the poses fp32 is confident of (score
    >= ``confident`` x the image's best: the low-score tail is mostly not people) with every keypoint moved by a
    seeded Gaussian offset sized so that fp32's expected OKS to it is ``label_oks`` (per coordinate std
    c * 2 sigma_j * sqrt(area), c = sqrt(1 / label_oks - 1): E[exp(-c^2 X)] = 1 / (1 + c^2) for X ~ Exp(1)).
    """
    sigmas = np.asarray(dataset_facts(dataset).oks_sigmas)
    best: dict[int, float] = {}
    for r in reference:
        best[r["image_id"]] = max(best.get(r["image_id"], 0.0), float(r["score"]))
    chosen = [r for r in reference if float(r["score"]) >= confident * best[r["image_id"]]]
    c = float(np.sqrt(1.0 / label_oks - 1.0))
    out = []
    for d in range(draws):
        rng = np.random.default_rng([seed, d])
        moved = []
        for r in chosen:
            kps = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3).copy()
            side = float(np.sqrt(max(r["bbox"][2], 1) * max(r["bbox"][3], 1)))
            kps[:, :2] += rng.standard_normal((len(kps), 2)) * (c * 2 * sigmas[: len(kps), None] * side)
            moved.append(dict(r, keypoints=[float(v) for v in kps.reshape(-1)]))
        out.append(as_ground_truth(moved, images))
    return out


def candidates(
    results: Sequence[dict[str, Any]], reference: Sequence[dict[str, Any]], images: Sequence[dict[str, Any]]
) -> dict[str, float]:
    """Every label-free candidate loss (AP points) of ``results`` against fp32's ``reference`` poses."""

    out: dict[str, float] = {}
    full = as_ground_truth(reference, images)
    base, got = _stats(reference, full), _stats(results, full)
    out["agreement"] = 100 * (base[0] - got[0])
    out["agreement50"] = 100 * (base[1] - got[1])
    best: dict[int, float] = {}
    for r in reference:
        best[r["image_id"]] = max(best.get(r["image_id"], 0.0), r["score"])
    for frac in (0.3, 0.5):
        conf = as_ground_truth([r for r in reference if r["score"] >= frac * best[r["image_id"]]], images)
        b, g = _stats(reference, conf), _stats(results, conf)
        out[f"confident{frac}"] = 100 * (b[0] - g[0])
        out[f"confident{frac}_50"] = 100 * (b[1] - g[1])
    for k in (2.0, 4.0):
        sigmas = np.asarray(COCO.oks_sigmas) * k
        b, g = _stats(reference, full, sigmas), _stats(results, full, sigmas)
        out[f"tolerant{k:g}"] = 100 * (b[0] - g[0])
    drops = [
        100 * (_stats(reference, gt)[0] - _stats(results, gt)[0]) for gt in simulated_labels(reference, images, "coco")
    ]
    out["simulated"] = float(np.mean(drops))
    return {k: round(float(v), 3) for k, v in out.items()}


def study(
    onnx_path: Path, calib_dir: Path, images: Path, annotations: Path, count: int = 48, dump: Path | None = None
) -> list[dict[str, Any]]:
    """One row per variant: true ΔAP and every candidate, on the first ``count`` annotated images of ``images``."""
    import dataclasses

    import onnx

    from hhrnet.export.guard import LABEL_FREE_STAT, Quantizer, Scorer, _ap, confident_poses, holdout_set
    from hhrnet.export.onnx import read_contract
    from hhrnet.export.precision import calibration_set, int8_settings, quantizable_nodes, resolve_keep, to_fp16

    model = onnx.load(str(onnx_path))
    art = read_contract(onnx_path)
    held = holdout_set(images, (), count, annotations)
    scorer = Scorer(model, art.codec, art.graph, held)
    free = Scorer.__new__(Scorer)  # the same fp32 poses, scored the guard's label-free way (no second fp32 run)
    free.__dict__.update(scorer.__dict__, holdout=dataclasses.replace(held, annotations=None), labelled=False)
    free.truth, free.stat = confident_poses(scorer.reference, scorer.images_meta), LABEL_FREE_STAT
    free.base = _ap(free.reference, free.truth, art.codec.dataset, free.stat)
    ref = scorer.reference
    assert held.annotations is not None
    rows: list[dict[str, Any]] = []
    poses: dict[str, list[dict[str, Any]]] = {}

    def add(name: str, results: list[dict[str, Any]]) -> None:
        poses[name] = results
        ap = _ap(results, held.annotations, art.codec.dataset)  # type: ignore[arg-type]
        row = {"variant": name, "AP": round(ap, 5), "true_dAP": round(100 * (scorer.base - ap), 3)}
        row.update(candidates(results, ref, scorer.images_meta))
        row["guard_label_free"] = free.score_poses(results)["loss"]  # the guard's own label-free Scorer
        rows.append(row)
        print(row, flush=True)

    add("fp32", ref)
    # harmless perturbation: the same fp32 network, every input pixel one grey level brighter
    from hhrnet.export.guard import Holdout

    bright = Holdout(
        [np.minimum(im.astype(np.int16) + 1, 255).astype(np.uint8) for im in held.images],
        held.image_ids,
        held.annotations,
        held.provenance,
    )
    add("fp32 +1 grey", Scorer(model, art.codec, art.graph, bright).reference)
    add("fp16", scorer.poses(to_fp16(model, ())[0]))
    heads = resolve_keep(model.graph, ["heads"])
    for label, method, pct, n, target in (
        ("p99.999 64", "percentile", 99.999, 64, "tensorrt"),
        ("p99.999 64 cpu", "percentile", 99.999, 64, "cpu"),
        ("minmax 64", "minmax", 100.0, 64, "tensorrt"),
        ("p99.99 64", "percentile", 99.99, 64, "tensorrt"),
        ("p99.95 64", "percentile", 99.95, 64, "tensorrt"),
        ("p99.9 64", "percentile", 99.9, 64, "tensorrt"),
        ("p99 64", "percentile", 99.0, 64, "tensorrt"),
        ("p99.999 2", "percentile", 99.999, 2, "tensorrt"),
        ("minmax 1", "minmax", 100.0, 1, "tensorrt"),
    ):
        calib = calibration_set(calib_dir, art.codec, n)
        quantize = Quantizer(model, calib.inputs, int8_settings(method, pct, target))
        try:
            nodes = quantizable_nodes(model, target)
            add(f"int8 {label}", scorer.poses(quantize(nodes)))
            if target == "tensorrt" and n == 64 and pct in (99.999, 99.9, 99.0):
                add(f"int8 {label} heads fp32", scorer.poses(quantize([x for x in nodes if x not in heads])))
        finally:
            quantize.close()
    if dump is not None:
        import json

        dump.write_text(json.dumps({"images": scorer.images_meta, "annotations": held.annotations, "poses": poses}))
    return rows


if __name__ == "__main__":
    import json
    import sys

    onnx_file, calib, imgs, ann, out = sys.argv[1:6]
    table = study(Path(onnx_file), Path(calib), Path(imgs), Path(ann), int(sys.argv[6]), Path(out + ".poses.json"))
    Path(out).write_text(json.dumps(table, indent=1))
