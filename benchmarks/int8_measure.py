"""Which label-free int8 loss tracks the true AP drop: int8 variants with a range of true ΔAP, each scored by
every candidate measure on the same held-out images.

Variants differ in calibration (method, percentile, image count) and in the blocks kept in float, so their true
ΔAP spreads from about nothing to several points. For each the poses on the held-out images are computed once;
the true ΔAP (against the annotations) and each label-free candidate (from fp32's and the variant's poses only)
come from those same poses. Candidates:

* ``agreement``: the variant's poses scored against all of fp32's poses as ground truth, OKS 0.5:0.95;
* ``agreement50``: the same at OKS 0.5 only;
* ``confident``: ground truth = fp32's confident poses (score >= ``CONFIDENT`` times the image's best score);
  fp32's full output scored against it minus the variant's, OKS 0.5:0.95;
* ``tolerant``: agreement with the OKS sigmas widened by fp32's own error (``TOLERANCE`` times the COCO
  sigmas), so keypoint jitter well inside fp32's error is not counted as loss.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

COCO_SIGMAS = np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87,
                        0.89, 0.89]) / 10  # fmt: skip


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


def candidates(
    results: Sequence[dict[str, Any]], reference: Sequence[dict[str, Any]], images: Sequence[dict[str, Any]]
) -> dict[str, float]:
    """Every label-free candidate loss (AP points) of ``results`` against fp32's ``reference`` poses."""
    from hhrnet.export.guard import as_ground_truth

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
    for k in (2.0, 3.0, 4.0):
        b, g = _stats(reference, full, COCO_SIGMAS * k), _stats(results, full, COCO_SIGMAS * k)
        out[f"tolerant{k:g}"] = 100 * (b[0] - g[0])
    return {k: round(float(v), 3) for k, v in out.items()}


def study(
    onnx_path: Path, calib_dir: Path, images: Path, annotations: Path, count: int = 48, dump: Path | None = None
) -> list[dict[str, Any]]:
    """One row per variant: true ΔAP and every candidate, on the first ``count`` annotated images of ``images``."""
    import onnx

    from hhrnet.export.guard import Quantizer, Scorer, _ap, holdout_set
    from hhrnet.export.onnx import read_contract
    from hhrnet.export.precision import calibration_set, int8_settings, quantizable_nodes, resolve_keep, to_fp16

    model = onnx.load(str(onnx_path))
    art = read_contract(onnx_path)
    held = holdout_set(images, (), count, annotations)
    scorer = Scorer(model, art.codec, art.graph, held)
    ref = scorer.reference
    assert held.annotations is not None
    rows: list[dict[str, Any]] = []
    poses: dict[str, list[dict[str, Any]]] = {}

    def add(name: str, results: list[dict[str, Any]]) -> None:
        poses[name] = results
        ap = _ap(results, held.annotations, art.codec.dataset)  # type: ignore[arg-type]
        row = {"variant": name, "AP": round(ap, 5), "true_dAP": round(100 * (scorer.base - ap), 3)}
        row.update(candidates(results, ref, scorer.images_meta))
        rows.append(row)
        print(row, flush=True)

    add("fp32", ref)
    # harmless perturbation: the same fp32 network, every input pixel one grey level brighter
    from hhrnet.export.guard import Holdout

    bright = Holdout([np.minimum(im.astype(np.int16) + 1, 255).astype(np.uint8) for im in held.images],
                     held.image_ids, held.annotations, held.provenance)  # fmt: skip
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
