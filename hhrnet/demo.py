"""The main job, end to end on built-in data: synthesize -> train (tiny) -> evaluate AP -> export ONNX ->
AP-parity and latency benchmarks -> predict and draw on a sample image -> summary.

About 10-15 minutes on 2 CPU cores with the defaults; ``minutes`` bounds the training part.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Log = Callable[[str], None]


@dataclass
class DemoSummary:
    out: Path
    outputs: dict[str, str] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict)


def run_demo(out: str | Path, *, minutes: float = 6.0, train_images: int = 400, val_images: int = 60,
             log: Log = print) -> DemoSummary:  # fmt: skip
    import cv2

    from hhrnet.benchmarks.common import write_rows
    from hhrnet.benchmarks.latency import batch_rows, people_rows, stage_rows
    from hhrnet.benchmarks.parity import Variant
    from hhrnet.benchmarks.parity import run as parity_run
    from hhrnet.checkpoint import load_model
    from hhrnet.config import apply_overrides, preset
    from hhrnet.data.synth import synthesize
    from hhrnet.evaluate import evaluate_model, write_results
    from hhrnet.export.backends import OnnxRuntimeBackend, TorchBackend
    from hhrnet.export.onnx import export_onnx
    from hhrnet.export.parity import decoded_parity
    from hhrnet.inference import Predictor, read_image
    from hhrnet.io import atomic_write_bytes, atomic_write_text
    from hhrnet.training import train
    from hhrnet.visualize import draw_poses

    root = Path(out)
    summary = DemoSummary(root)
    data = root / "data"
    started = time.perf_counter()

    log(f"[1/7] synthesizing {train_images} train / {val_images} val images -> {data}")
    if not (data / "annotations" / "person_keypoints_val.json").is_file():
        synthesize(data, num_train=train_images, num_val=val_images, image_size=256, seed=0, force=True)
    ann, images = data / "annotations" / "person_keypoints_val.json", data / "images" / "val"

    # ~12 s per epoch of 400 images at 256x256 on 2 cores: pick the epoch count from the time budget
    epochs = max(2, int(minutes * 60 / (train_images / 33.0)))
    cfg = apply_overrides(preset("tiny"), [f"train.end_epoch={epochs}", f"train.lr_step=[{int(epochs * 0.8)}]",
                                           f"train.val_every={epochs}"])  # fmt: skip
    log(f"[2/7] training the tiny preset for {epochs} epochs (~{minutes:.0f} min) -> {root / 'train'}")
    result = train(cfg, output_dir=root / "train", data_root=data, val_max_images=val_images, resume=True)
    ckpt = result.best_checkpoint or result.last_checkpoint
    summary.outputs["checkpoint"] = str(ckpt)
    summary.numbers["train_minutes"] = round(result.seconds / 60, 2)
    summary.numbers["epochs"] = epochs

    log("[3/7] evaluating COCO keypoint AP on the synthetic val split (official test pipeline, flip test)")
    model, cfg = load_model(ckpt)
    torch_net = TorchBackend(model)
    ev = evaluate_model(torch_net, cfg, images, ann)
    write_results(root / "val_results.json", ev.results)
    summary.numbers["val_AP"] = round(ev.stats["AP"], 4)
    summary.numbers["val_AP50"] = round(ev.stats["AP .5"], 4)
    summary.outputs["results"] = str(root / "val_results.json")
    log(f"      AP {ev.stats['AP']:.4f}  AP50 {ev.stats['AP .5']:.4f}  AR {ev.stats['AR']:.4f}")

    log("[4/7] exporting ONNX (dynamic shapes) and checking ONNX Runtime against PyTorch")
    onnx_path = root / "model.onnx"
    report = export_onnx(model, cfg, onnx_path, check_shapes=[(1, 256, 256), (2, 256, 320)])
    parity = decoded_parity(model, cfg, onnx_path, images)
    summary.outputs["onnx"] = str(onnx_path)
    summary.numbers["onnx_max_abs_error"] = max(report.max_abs_error.values())
    summary.numbers["onnx_decoded_positions_identical"] = parity.identical

    log("[5/7] AP parity: torch+reference (baseline) vs torch+fast vs onnxruntime+fast")
    ort_net = OnnxRuntimeBackend(onnx_path)
    rows = parity_run(
        [Variant("torch fp32 + reference", torch_net, "reference", "exact"),
         Variant("torch fp32 + fast", torch_net, "fast", "exact"),
         Variant("onnxruntime fp32 + fast", ort_net, "fast", "fp32")],
        cfg, images, ann, max_images=min(val_images, 30),
    )  # fmt: skip
    write_rows(root / "parity.json", rows)
    summary.numbers["parity"] = {r["variant"]: (r["delta_AP_points"], r["agreement_AP"], r["passed"]) for r in rows}

    log("[6/7] latency per stage (torch, onnxruntime) and decode vs people")
    sample = read_image(sorted(images.iterdir())[0])
    lat = stage_rows(Predictor(torch_net, cfg), sample, "torch", "fp32", 10)
    lat += stage_rows(Predictor(ort_net, cfg), sample, "onnxruntime", "fp32", 10)
    pred = Predictor(ort_net, cfg)
    hm, tags = pred.maps(pred.preprocess(sample))
    lat += people_rows(hm.shape, tags.shape[-1], (1, 5, 15, 30), 5)
    lat += batch_rows(torch_net, "torch", "fp32", 256, (1, 8)) + batch_rows(ort_net, "onnxruntime", "fp32", 256, (1, 8))
    write_rows(root / "latency.json", lat)
    summary.numbers["total_ms_p50"] = {r["backend"]: r["p50_ms"] for r in lat if r.get("stage") == "total"}

    log("[7/7] predicting and drawing skeletons on a sample image")
    poses = pred.predict(sample)
    drawn = draw_poses(sample, poses.keypoints, poses.scores, min_score=0.05)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    if ok:
        atomic_write_bytes(root / "sample_pose.jpg", buf.tobytes())
    summary.outputs["drawing"] = str(root / "sample_pose.jpg")
    summary.numbers["sample_people"] = len(poses)
    summary.numbers["demo_minutes"] = round((time.perf_counter() - started) / 60, 2)
    atomic_write_text(root / "summary.json", json.dumps({"outputs": summary.outputs, "numbers": summary.numbers},
                                                        indent=2, default=str))  # fmt: skip
    return summary
