"""AP parity: every backend x decoder against the PyTorch fp32 + reference-decoder baseline, on the same
images with the same pycocotools evaluation.

For each variant: its AP against the ground truth, ΔAP against the baseline, and an "agreement AP" that
scores the variant's predictions against the baseline's predictions used as ground truth (1.0 = the same
poses). Gates (AP points, i.e. AP x 100): exact decoders ΔAP = 0; ONNX Runtime fp32 |ΔAP| <= 0.1;
fp16 <= 0.3; int8 <= 1.0. Reduced-precision rows (fp16 / int8 ONNX files made by ``hhrnet export
--precision``) carry how they were made: the groups kept in fp32 and, for int8, the calibration method,
image count and activation type, so a calibration choice can be read off the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hhrnet.benchmarks.common import Row, environment
from hhrnet.export.guard import as_ground_truth

GATES = {"exact": 0.0, "fp32": 0.1, "fp16": 0.3, "int8": 1.0}


@dataclass(frozen=True)
class Variant:
    name: str
    network: Any  # a network callable; its ``graph`` attribute (default raw) says what it returns
    decoder: str
    gate: str  # key of GATES
    info: Mapping[str, Any] = field(default_factory=dict)  # extra columns (e.g. calibration of an int8 file)


def precision_info(artifact: Any) -> dict[str, Any]:
    """Columns describing how an exported file's precision was made (empty for fp32)."""
    if artifact is None or artifact.precision == "fp32":
        return {}
    cal = artifact.calibration or {}
    guard = artifact.extra.get("guard")
    if guard:  # the int8 guard: how many blocks it kept in fp32, and what it measured on its held-out images
        kept = f"guard: {len(guard['kept'])}/{guard['blocks']} blocks"
        info: dict[str, Any] = {
            "kept_fp32": kept,
            "guard_loss": guard["result"]["loss"],
            "guard_budget": guard["max_ap_drop"],
        }
    else:
        info = {"kept_fp32": ",".join(artifact.extra.get("kept_fp32", [])) or "none"}
    if cal:
        method = cal.get("method", "")
        if method == "percentile":
            method = f"percentile {cal.get('percentile')}"
        info |= {"calibration": f"{method}, {cal.get('count')} images", "activations": cal.get("activations", "")}
    return info


def run(
    variants: Sequence[Variant],
    codec: Any,
    image_dir: str | Path,
    ann_file: str | Path,
    *,
    max_images: int | None = None,
    done: Mapping[str, Any] | None = None,
) -> list[Row]:
    """variants[0] is the baseline (PyTorch fp32, usually + the reference decoder); all run with ``codec``.
    ``done`` maps a variant's name to its :class:`~hhrnet.evaluate.EvalResult` already computed on the same
    images with the same codec (e.g. the demo's own evaluation), which is then not run again."""
    import json

    from hhrnet.evaluate import evaluate_model, evaluate_predictions

    ann = json.loads(Path(ann_file).read_text())
    if max_images is not None:
        ann = dict(ann, images=ann["images"][:max_images])
    env = environment("cpu")
    first = variants[0]
    base = (done or {}).get(first.name) or evaluate_model(
        first.network, codec, image_dir, ann_file, max_images=max_images, decoder=first.decoder
    )
    reference_gt = as_ground_truth(base.results, ann["images"], ann.get("categories"))
    rows: list[Row] = []
    for v in variants:
        if v is variants[0]:
            res = base
        elif done and v.name in done:
            res = done[v.name]
        else:
            res = evaluate_model(v.network, codec, image_dir, ann_file, max_images=max_images, decoder=v.decoder)
        agreement = (
            evaluate_predictions(res.results, reference_gt, codec.dataset)["AP"] if reference_gt["annotations"] else 1.0
        )
        delta = (res.stats["AP"] - base.stats["AP"]) * 100
        limit = GATES[v.gate]
        rows.append(
            {
                "benchmark": "parity",
                "variant": v.name,
                "graph": getattr(v.network, "graph", "raw"),
                "decoder": v.decoder,
                "AP": round(res.stats["AP"], 5),
                "delta_AP_points": round(delta, 4),
                "agreement_AP": round(agreement, 5),
                "gate": limit,
                "passed": abs(delta) <= limit + 1e-9,
                "images": res.images,
                **v.info,
                **env,
            }
        )
    return rows


def calibration_spread(
    fp32_onnx: str | Path,
    calib_images: str | Path,
    image_dir: str | Path,
    ann_file: str | Path,
    *,
    subsets: int = 4,
    count: int = 64,
    max_images: int | None = None,
    work: str | Path,
    **convert_options: Any,
) -> list[Row]:
    """ΔAP of int8 files calibrated on ``subsets`` disjoint subsets of ``calib_images`` (``count`` images each,
    taken in name order), against the fp32 file run the same way; one row per subset plus a ``spread`` row
    (min, max, standard deviation of ΔAP), so a user sees how far one calibration's number can be trusted.

    Each subset is its own folder under ``work`` holding links to its images, so the guard's held-out images
    (the folder's images calibration did not use) come from the same subset; ``convert_options`` go to
    :func:`hhrnet.export.precision.convert` (e.g. ``target``, ``guarded``, ``annotations``).
    """
    import statistics

    from hhrnet.export.precision import convert
    from hhrnet.images import IMAGE_SUFFIXES
    from hhrnet.runtime.ort import OrtSession

    files = sorted(p for p in Path(calib_images).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    per = len(files) // subsets
    if subsets < 2 or per < 1:
        raise ValueError(f"{len(files)} images cannot make {subsets} calibration subsets (need at least 2)")
    base = OrtSession(fp32_onnx)
    variants = [Variant("onnxruntime fp32", base, "fast", "fp32")]
    for i in range(subsets):
        folder = Path(work) / f"subset{i}"
        folder.mkdir(parents=True, exist_ok=True)
        for p in files[i * per : (i + 1) * per]:
            link = folder / p.name
            if not link.exists():
                link.symlink_to(p.resolve())
        out = Path(work) / f"int8_subset{i}.onnx"
        rep = convert(fp32_onnx, out, "int8", calib_images=folder, calib_count=min(count, per), **convert_options)
        variants.append(Variant(f"int8 subset {i}", OrtSession(out), "fast", "int8", precision_info(rep.artifact)))
    rows = run(variants, base.artifact.codec, image_dir, ann_file, max_images=max_images)
    deltas = [r["delta_AP_points"] for r in rows[1:]]
    rows.append(
        {
            "benchmark": "parity",
            "variant": f"spread over {subsets} calibration subsets",
            "delta_AP_min": min(deltas),
            "delta_AP_max": max(deltas),
            "delta_AP_std": round(statistics.pstdev(deltas), 4),
            "images": rows[0]["images"],
        }
    )
    return rows
