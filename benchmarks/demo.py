"""The main job, end to end on built-in data: synthesize -> train (tiny, a fixed number of steps) -> evaluate AP ->
export ONNX -> AP-parity and latency benchmarks -> predict and draw on a sample image -> summary.

The job is :func:`run_demo`, a sequence of stage functions sharing one :class:`_Job` (output folder, log, timings,
summary); ``hhrnet demo`` only parses options and prints the summary. It lives with the benchmarks because it runs
them (parity, latency): the library below never imports this layer.

Training runs a fixed number of optimiser steps over a fixed data order and seed (the tiny preset's
``end_epoch`` epochs of ``train_images / 8`` steps), so the same commit trains the same recipe on every machine:
what varies with the machine is the time it takes (reported, with img/s and an ETA), not the number of steps.
``minutes`` > 0 adds a wall-clock budget instead (the learning rate then follows the time, and a slow machine
trains fewer steps: a different model). Re-running with the same ``out`` reuses the data and the finished
training run: the training figures in the summary are the first run's (read from the checkpoint).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hhrnet.benchmarks.parity import Variant

Log = Callable[[str], None]

# For the estimate printed before training only (the progress lines then show the measured img/s and ETA, the
# summary the measured times): what follows training took 4.1 min in the fresh-clone run of 2026-12-05 (int8 guard
# and parity 3.2 min, before the parity gates reused the demo's own evaluation), and the tiny preset trains at ~23
# img/s on the project's 2-core Intel Xeon (~32 on its AMD EPYC).
AFTER_TRAINING_MINUTES = 3.0
QUIET_IMAGES_PER_S = 23.0
# int8 calibration images (the first of the training images; at most half of them, the rest are held out)
CALIB_IMAGES = 64
# held-out training images the int8 guard scores each candidate on (not used for calibration)
GUARD_IMAGES = 48
# val images on which the reference decoder (the official parse, ~0.5 s an image in Python) is compared with the
# fast one bit for bit; AP parity then uses the fast decoder (200 images with the reference took 104 s)
REFERENCE_IMAGES = 20
# The demo's synthetic data re-places a figure whose box overlaps an earlier one by more than this fraction of
# the smaller box (synthesize(max_overlap=...)): overlaps stay, total overlaps become rare (benchmarks/TRAINING.md).
DEMO_MAX_OVERLAP = 0.3
# The sample drawing shows the poses the model is confident about; weaker ones are mostly fragments of people
# already drawn (their count is in the summary).
DRAW_MIN_SCORE = 0.2
DRAW_JOINT_THRESHOLD = 0.1  # a drawn pose shows its joints scoring above this (and figure_mixing counts those)
NO_TRANSFER = (
    "the tiny model has learnt only the synthetic stick figures: it does not transfer to real photos. "
    "For photos use a COCO/CrowdPose preset with released weights."
)


@dataclass
class DemoSummary:
    out: Path
    outputs: dict[str, str] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str, str]]:
        """(what, value, note) lines of the summary table, in reading order."""
        n = self.numbers
        rows: list[tuple[str, str, str]] = []
        if "val_AP" in n:
            where = f"{n.get('val_images', '?')} synthetic val images, official test pipeline with flip"
            rows.append(("val AP (OKS .50:.95)", f"{n['val_AP']:.3f}", f"{verdict(n['val_AP'])}; {where}"))
            rows.append(("val AP50 / AR", f"{n['val_AP50']:.3f} / {n.get('val_AR', float('nan')):.3f}", ""))
        rows.append(("real photos", "not supported", NO_TRANSFER))
        if "train_minutes" in n:
            note = "figures of the first run (training was already complete)" if n.get("train_resumed") else ""
            if n.get("train_cpu_steal_percent") is not None:
                steal = f"CPU steal {n['train_cpu_steal_percent']:.0f} % (time the hypervisor gave to other guests)"
                note = f"{note}; {steal}" if note else steal
            rows.append(
                (
                    "training",
                    f"{n['train_minutes']:.1f} min, {n['epochs']:.1f} epochs, {n['steps']} steps, "
                    f"{n['train_images_per_s']:.0f} img/s",
                    note,
                )
            )
        if "grouped" in n:
            rows.append(("tags group people", f"{n['grouped']:.0%}", "of training people, at true joints, last epoch"))
        if "joining_figures" in n:
            m = n["joining_figures"]
            rows.append(
                (
                    "poses joining figures",
                    f"{m['joining']} of {m['poses']} ({m['joining'] / max(m['poses'], 1):.0%})",
                    f"val poses scoring >= {DRAW_MIN_SCORE} whose drawn joints (> {DRAW_JOINT_THRESHOLD}) land on "
                    ">= 2 people "
                    f"({m['images']} of {n.get('val_images', '?')} images)",
                )
            )
        if "reference_check" in n:
            r = n["reference_check"]
            same = "identical" if r["differ"] == 0 else f"DIFFER on {r['differ']}"
            note = "poses and scores bit for bit, same maps" if r["differ"] == 0 else "a defect: report it"
            rows.append(("reference vs fast decoder", f"{same} on {r['images']} val images", note))
        if "onnx_max_abs_error" in n:
            rows.append(
                (
                    "ONNX vs PyTorch",
                    f"max |error| {n['onnx_max_abs_error']:.2e}",
                    _decoded_note(n),
                )
            )
        for name, p in n.get("parity", {}).items():
            rows.append(
                (
                    f"parity: {name}",
                    f"ΔAP {p['delta_AP_points']:+.2f} points, agreement AP {p['agreement_AP']:.3f}",
                    ("passed" if p["passed"] else "FAILED")
                    + f" (gate ±{p['gate']} points vs torch fp32 + fast decoder)",
                )
            )
        if n.get("int8_guard"):
            rows.append(
                (
                    "int8: kept in float",
                    n["int8_guard"][0].split("): ", 1)[-1],
                    "; ".join(line.strip().removeprefix("kept in ") for line in n["int8_guard"][1:])
                    or "nothing kept: every block quantized",
                )
            )
        for backend, ms in n.get("total_ms_p50", {}).items():
            rows.append((f"latency p50: {backend}", f"{ms:.1f} ms", "256x256 image with flip, end to end"))
        if "sample_people" in n:
            found = n.get("sample_poses_found", n["sample_people"])
            rows.append(
                (
                    "sample image",
                    f"{n['sample_people']} people drawn",
                    f"of {found} poses found, those scoring >= {DRAW_MIN_SCORE} with their joints scoring > "
                    f"{DRAW_JOINT_THRESHOLD} (see 'poses joining figures'): "
                    f"{self.outputs.get('drawing', '')}",
                )
            )
        if "demo_minutes" in n:
            rows.append(("this run", f"{n['demo_minutes']:.1f} min", "whole job"))
        return rows


def cpu_times() -> tuple[int, int] | None:
    """(steal, total) CPU ticks since boot from /proc/stat (None where there is none): on a virtual machine,
    steal is the time the hypervisor ran something else while this machine wanted the CPU."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def steal_percent(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Share of the CPU time between two :func:`cpu_times` readings that the hypervisor took (percent)."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round(100.0 * (after[0] - before[0]) / (after[1] - before[1]), 1)


def verdict(ap: float) -> str:
    """How good a val AP on the synthetic split is, in words."""
    if ap >= 0.5:
        return "good on its own synthetic data"
    if ap >= 0.3:
        return "fair: many poses are right, many joints are off"
    return "poor: most poses are wrong"


def _synth_matches(data: Path, train_images: int, val_images: int) -> bool:
    from hhrnet.data.synth import COCO_MIN_KEYPOINT_AREA

    ann = data / "annotations" / "person_keypoints_val.json"
    if not ann.is_file():
        return False
    info = json.loads(ann.read_text()).get("info", {})
    wanted = {
        "num_train": train_images,
        "num_val": val_images,
        "min_keypoint_area": COCO_MIN_KEYPOINT_AREA,
        "max_overlap": DEMO_MAX_OVERLAP,
    }
    return all(info.get(k) == v for k, v in wanted.items())


@dataclass
class _Job:
    """What the stages share: where they write, how they log, the summary they fill, the time each took."""

    root: Path
    log: Log
    summary: DemoSummary
    started: float = field(default_factory=time.perf_counter)
    mark: float = field(default_factory=time.perf_counter)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.stage_seconds[name] = round(now - self.mark, 1)
        self.mark = now

    @property
    def numbers(self) -> dict[str, Any]:
        return self.summary.numbers


def run_demo(
    out: str | Path,
    *,
    epochs: int | None = None,
    minutes: float = 0.0,
    train_images: int = 400,
    val_images: int = 200,
    log: Log = print,
) -> DemoSummary:
    """The main job into ``out``; ``epochs`` defaults to the tiny preset's ``end_epoch``, ``minutes`` > 0 trains to a
    wall-clock budget instead (at most ``epochs`` when given)."""
    from hhrnet.io import atomic_write_text
    from hhrnet.kernels.decode import warmup_in_child

    root = Path(out)
    job = _Job(root, log, DemoSummary(root))
    # the fast decoder compiles (~30 s of one core on a fresh clone) into Numba's cache beside synthesis, which
    # uses one core, instead of delaying the evaluation; if it fails, the evaluation compiles it as before
    compiling = warmup_in_child(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        data = synthesize_stage(job, train_images, val_images)
        ckpt = train_stage(job, data, epochs, minutes, train_images)
        compiling.wait()  # long done: it took ~30 s on a cold cache
    finally:
        compiling.kill()  # a no-op once it has exited
    model, cfg, torch_net, codec, fast_eval = evaluate_stage(job, ckpt, data)
    ort_net = export_stage(job, model, cfg, data)
    parity_stage(job, data, torch_net, ort_net, codec, fast_eval)
    pred = latency_stage(job, data, torch_net, ort_net, codec)
    draw_stage(job, data, pred)
    job.numbers["stage_seconds"] = job.stage_seconds
    job.numbers["demo_minutes"] = round((time.perf_counter() - job.started) / 60, 2)
    text = json.dumps({"outputs": job.summary.outputs, "numbers": job.numbers}, indent=2, default=str)
    atomic_write_text(root / "summary.json", text)
    return job.summary


def synthesize_stage(job: _Job, train_images: int, val_images: int) -> Path:
    """[1/7] The demo's synthetic data (reused when it matches); a training run on other data is removed."""
    from hhrnet.data.synth import COCO_MIN_KEYPOINT_AREA, synthesize

    data = job.root / "data"
    if _synth_matches(data, train_images, val_images):
        job.log(f"[1/7] reusing the synthetic data in {data}")
    else:
        job.log(f"[1/7] synthesizing {train_images} train / {val_images} val images -> {data}")
        synthesize(
            data,
            num_train=train_images,
            num_val=val_images,
            image_size=256,
            seed=0,
            force=True,
            min_keypoint_area=COCO_MIN_KEYPOINT_AREA,
            max_overlap=DEMO_MAX_OVERLAP,
        )
        if (job.root / "train").exists():  # a run on other data must not be resumed
            shutil.rmtree(job.root / "train")
    job.done("synthesize")
    return data


def _val(data: Path) -> tuple[Path, Path]:
    """(val images folder, val annotation file)."""
    return data / "images" / "val", data / "annotations" / "person_keypoints_val.json"


def train_stage(job: _Job, data: Path, epochs: int | None, minutes: float, train_images: int) -> Path:
    """[2/7] The tiny preset for its fixed number of steps (or a wall-clock budget); returns the checkpoint."""
    from hhrnet.config import apply_overrides, preset
    from hhrnet.training import train
    from hhrnet.training.progress import fmt_seconds

    overrides = ["train.val_every=0"]  # validation happens once, in step 3, with the full pipeline
    if epochs is not None:
        overrides.append(f"train.end_epoch={epochs}")
    if minutes > 0:
        overrides.append(f"train.minutes={minutes}")
    cfg = apply_overrides(preset("tiny"), overrides)
    steps = cfg.train.end_epoch * max(train_images // cfg.train.images_per_gpu, 1)
    if minutes > 0:
        train_minutes = minutes
        what = f"for {minutes:g} min (wall clock: a slower machine trains fewer steps, a different model)"
    else:
        train_minutes = steps * cfg.train.images_per_gpu / QUIET_IMAGES_PER_S / 60
        what = (
            f"for {steps} steps ({cfg.train.end_epoch} epochs of {train_images} images, seed {cfg.train.seed}; "
            f"~{train_minutes:.0f} min at {QUIET_IMAGES_PER_S:g} img/s on 2 quiet cores)"
        )
    end = time.strftime("%H:%M", time.localtime(time.time() + (train_minutes + AFTER_TRAINING_MINUTES) * 60))
    job.log(
        f"[2/7] training the tiny preset {what} -> {job.root / 'train'}; the whole job should end about {end} "
        "(the progress lines show the img/s and ETA measured here)"
    )
    ticks = cpu_times()
    result = train(
        cfg,
        output_dir=job.root / "train",
        data_root=data,
        resume=True,
        epochs=epochs if minutes > 0 else None,
        log=job.log,
    )
    last = result.history[-1] if result.history else {}
    n = job.numbers
    n["train_minutes"] = round(result.train_seconds / 60, 2)
    n["train_resumed"] = result.epochs_run == 0
    n["epochs"] = round(result.epochs_done + last.get("epoch_fraction", 0.0), 2)
    n["steps"] = result.steps_done
    n["train_images_per_s"] = round(result.steps_done * cfg.train.images_per_gpu / max(result.train_seconds, 1e-9), 1)
    if "grouped" in last:
        n["grouped"] = round(last["grouped"], 3)
    if result.epochs_run > 0:
        n["train_cpu_steal_percent"] = steal_percent(ticks, cpu_times())
    ckpt = result.best_checkpoint or result.last_checkpoint
    job.summary.outputs["checkpoint"] = str(ckpt)
    job.done("train")
    job.log(
        f"      trained {fmt_seconds(result.train_seconds)}: {n['epochs']} epochs, {result.steps_done} steps, "
        f"{n['train_images_per_s']} img/s"
    )
    return ckpt


def evaluate_stage(job: _Job, ckpt: Path, data: Path) -> tuple[Any, Any, Any, Any, Any]:
    """[3/7] Val AP with the official test pipeline (flip) and the fast decoder: (model, cfg, net, codec, result)."""
    from hhrnet.checkpoint import load_model
    from hhrnet.codec import resolve_codec
    from hhrnet.evaluate import evaluate_model, figure_mixing, write_results
    from hhrnet.inference import torch_network

    job.log("[3/7] evaluating COCO keypoint AP on the synthetic val split (official test pipeline, flip test)")
    images, ann = _val(data)
    model, cfg = load_model(ckpt)
    torch_net = torch_network(model)
    codec = resolve_codec(cfg)
    ev = evaluate_model(torch_net, codec, images, ann)
    write_results(job.root / "val_results.json", ev.results)
    n = job.numbers
    n["val_AP"], n["val_AP50"], n["val_AR"] = (round(ev.stats[k], 4) for k in ("AP", "AP .5", "AR"))
    n["val_images"] = ev.images
    gt = json.loads(Path(ann).read_text())
    n["joining_figures"] = figure_mixing(
        ev.results, gt, codec.dataset, min_score=DRAW_MIN_SCORE, joint_threshold=DRAW_JOINT_THRESHOLD
    )
    job.summary.outputs["results"] = str(job.root / "val_results.json")
    ap, ap50, ar = ev.stats["AP"], ev.stats["AP .5"], ev.stats["AR"]
    job.log(f"      AP {ap:.4f}  AP50 {ap50:.4f}  AR {ar:.4f}: {verdict(ap)}")
    job.done("evaluate")
    return model, cfg, torch_net, codec, ev


def export_stage(job: _Job, model: Any, cfg: Any, data: Path) -> Any:
    """[4/7] ONNX (dynamic shapes) checked against PyTorch; returns its ONNX Runtime session."""
    from hhrnet.export.onnx import export_onnx
    from hhrnet.export.parity import decoded_parity
    from hhrnet.runtime.ort import OrtSession

    job.log("[4/7] exporting ONNX (dynamic shapes) and checking ONNX Runtime against PyTorch")
    onnx_path = job.root / "model.onnx"
    report = export_onnx(model, cfg, onnx_path, check_shapes=[(1, 256, 256), (2, 256, 320)])
    ort_net = OrtSession(onnx_path)
    parity = decoded_parity(model, ort_net, _val(data)[0])
    job.summary.outputs["onnx"] = str(onnx_path)
    n = job.numbers
    n["onnx_max_abs_error"] = max(report.max_abs_error.values())
    n["onnx_max_map_error"] = parity.max_map_error
    n["onnx_decoded_positions_identical"] = parity.identical
    n["onnx_decoded"] = {"images": parity.images, "differing": parity.differing, "max_px": parity.max_pose_px}
    job.done("export")
    return ort_net


def _decoded_note(n: dict[str, Any]) -> str:
    """What decoding the ONNX maps changed: nothing, or on how many images and how far."""
    if n.get("onnx_decoded_positions_identical"):
        return "decoded positions identical"
    d = n.get("onnx_decoded")
    if not d:
        return "decoded positions differ"
    return (
        f"decoded poses differ on {d['differing']} of {d['images']} val images (largest joint shift "
        f"{d['max_px']:.1f} px; the AP parity rows below measure what it costs)"
    )


def parity_stage(job: _Job, data: Path, torch_net: Any, ort_net: Any, codec: Any, fast_eval: Any) -> None:
    """[5/7] The reference decoder against the fast one, bit for bit, on the first val images; then AP parity on
    every val image: ONNX Runtime fp32 / fp16 / int8 + fast against torch fp32 + fast (step 3's evaluation, reused:
    the fast decoder equals the official parse, as just checked and as the golden tests prove)."""
    from hhrnet.benchmarks.common import write_rows
    from hhrnet.benchmarks.parity import run as parity_run
    from hhrnet.export.guard import float_summary
    from hhrnet.export.precision import convert
    from hhrnet.runtime.ort import OrtSession

    what = "AP parity: onnxruntime fp32 / fp16 / int8 + fast vs torch fp32 + fast"
    job.log(f"[5/7] reference vs fast decoder on {REFERENCE_IMAGES} val images; {what}")
    parts: dict[str, float] = {}  # seconds of each part of this stage
    mark = time.perf_counter()

    def part(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        parts[name] = round(now - mark, 1)
        mark = now

    job.numbers["reference_check"] = reference_check(torch_net, codec, _val(data)[0], REFERENCE_IMAGES)
    part("reference_check")
    fast = Variant("torch fp32 + fast", torch_net, "fast", "exact")
    variants = [fast, Variant("onnxruntime fp32 + fast", ort_net, "fast", "fp32")]
    for prec in ("fp16", "int8"):  # precision in the graph; int8 calibrated on training images via the codec
        path = job.root / f"model_{prec}.onnx"
        # int8: the accuracy guard keeps in float the fewest blocks that hold the AP drop on held-out training
        # images (not used for calibration) within 0.5 points, scored against their annotations
        conv = convert(
            job.root / "model.onnx",
            path,
            prec,
            calib_images=data / "images" / "train" if prec == "int8" else None,
            calib_count=min(CALIB_IMAGES, len(list((data / "images" / "train").iterdir())) // 2),
            annotations=data / "annotations" / "person_keypoints_train.json",
            guard_count=GUARD_IMAGES,
        )
        if prec == "int8":
            kept = float_summary(conv.artifact)
            for line in kept:
                job.log(f"      {line}")
            job.numbers["int8_guard"] = kept
        job.summary.outputs[f"onnx_{prec}"] = str(path)
        variants.append(Variant(f"onnxruntime {prec} + fast", OrtSession(path), "fast", prec))
        part(f"convert_{prec}")
    # every val image: on 30 images int8's ΔAP swung by 1-2 points between equally good quantizations (noise);
    # on 300 it was -0.3 to -0.5 (benchmarks/RESULTS.md)
    images, ann = _val(data)
    rows = parity_run(variants, codec, images, ann, done={fast.name: fast_eval})
    part("evaluate_3_variants")
    job.numbers["parity_seconds"] = parts
    write_rows(job.root / "parity.json", rows)
    keys = ("AP", "delta_AP_points", "agreement_AP", "gate", "passed")
    job.numbers["parity"] = {r["variant"]: {k: r[k] for k in keys} for r in rows}
    job.done("parity")


def reference_check(network: Any, codec: Any, images: Path, count: int) -> dict[str, Any]:
    """The official parse (reference decoder) and the fast decoder on the same maps of the first ``count``
    images: how many images, and on how many the poses and scores differ in any bit."""
    import numpy as np

    from hhrnet.images import read_image
    from hhrnet.inference import MapDecoder, Predictor

    pred = Predictor(network, codec)
    reference = MapDecoder(codec, decoder="reference")
    differ = 0
    files = sorted(images.iterdir())[:count]
    for path in files:
        maps = pred.maps(pred.preprocess(read_image(path)))
        fast, ref = pred.decode(maps), reference.decode(maps)
        differ += not all(np.array_equal(a, b) for a, b in zip(fast, ref, strict=True))
    return {"images": len(files), "differ": differ}


def latency_stage(job: _Job, data: Path, torch_net: Any, ort_net: Any, codec: Any) -> Any:
    """[6/7] Latency per stage (torch, ONNX Runtime) and decode time against the number of people."""
    from hhrnet.benchmarks.common import write_rows
    from hhrnet.benchmarks.latency import batch_rows, people_rows, stage_rows
    from hhrnet.images import read_image
    from hhrnet.inference import Predictor

    job.log("[6/7] latency per stage (torch, onnxruntime) and decode vs people")
    images = _val(data)[0]
    sample = read_image(sorted(images.iterdir())[0])
    pred = Predictor(ort_net, ort_net.artifact.codec)
    lat = stage_rows(Predictor(torch_net, codec), sample, "torch", "fp32", 10)
    lat += stage_rows(pred, sample, "onnxruntime", "fp32", 10)
    maps = pred.maps(pred.preprocess(sample))
    lat += people_rows(maps.heatmaps.shape, maps.tags.shape[-1], (1, 5, 15, 30), 5)
    lat += batch_rows(torch_net, "torch", "fp32", 256, (1, 8)) + batch_rows(ort_net, "onnxruntime", "fp32", 256, (1, 8))
    write_rows(job.root / "latency.json", lat)
    job.numbers["total_ms_p50"] = {r["backend"]: r["p50_ms"] for r in lat if r.get("stage") == "total"}
    job.done("latency")
    return pred


def draw_stage(job: _Job, data: Path, pred: Any) -> None:
    """[7/7] Poses on the first val image, drawn one colour per person, the threshold written on it."""
    from hhrnet.images import encode_jpeg, read_image
    from hhrnet.io import atomic_write_bytes
    from hhrnet.visualize import draw_poses

    job.log("[7/7] predicting and drawing skeletons on a sample image")
    sample = read_image(sorted(_val(data)[0].iterdir())[0])
    poses = pred.predict(sample)
    shown = int((poses.scores >= DRAW_MIN_SCORE).sum())
    caption = f"{shown} poses with score >= {DRAW_MIN_SCORE}, joints > {DRAW_JOINT_THRESHOLD}"
    drawn = draw_poses(
        sample, poses.keypoints, poses.scores, DRAW_JOINT_THRESHOLD, min_score=DRAW_MIN_SCORE, caption=caption
    )
    atomic_write_bytes(job.root / "sample_pose.jpg", encode_jpeg(drawn))
    job.summary.outputs["drawing"] = str(job.root / "sample_pose.jpg")
    job.numbers["sample_people"] = shown
    job.numbers["sample_poses_found"] = len(poses)
    job.done("predict")
