"""The prepared GPU check (benchmarks/gpu_check.py) on a CPU: its CUDA-decoder comparison under Numba's simulator
on a tiny scene, the training comparisons with device='cpu' (AMP harness, resume, DDP through torchrun with
gloo), the section harness (errors and time boxes isolated) and the script itself from a checkout that is not
pip-installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hhrnet.benchmarks import gpu_check as gc

ROOT = Path(__file__).resolve().parent.parent
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
CPU = gc.Check(out=Path("unused"), gpu=False)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """As the script's CPU side: torch's threads on a busy 2-core machine are up to 100x slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_compare_persons_finds_the_first_different_person() -> None:
    rng = np.random.default_rng(0)
    poses = rng.random((3, 17, 5)).astype(np.float32)
    scores = rng.random(3).astype(np.float32)
    assert gc.compare_persons((poses, scores), (poses.copy(), scores.copy()))["identical"]
    moved = poses.copy()
    moved[1, 4, 0] = np.nextafter(moved[1, 4, 0], np.float32(2))  # one ulp on one coordinate
    got = gc.compare_persons((poses, scores), (moved, scores))
    assert not got["identical"] and got["first_difference"] == 1 and got["persons_identical"] == 2
    fewer = gc.compare_persons((poses, scores), (poses[:2], scores[:2]))
    assert not fewer["identical"] and fewer["first_difference"] == 2 and fewer["persons_gpu"] == 2


@pytest.mark.skipif(not SIMULATOR, reason="needs NUMBA_ENABLE_CUDASIM=1 (make unit sets it)")
def test_decode_section_compares_the_cuda_decoder_under_the_simulator() -> None:
    """The very comparison the GPU runs, on a tiny realistic scene (3 joints, 16x24): the simulator's CUDA
    decoder must equal the CPU fast decoder person by person."""
    from numba import cuda

    one, _ = gc._cuda_decoder(capacity=8)
    rows = gc.decode_rows([("crowd", 3)], (3, 16, 24), one, cuda.to_device, repeats=1)
    (row,) = rows
    assert row["persons_cpu"] > 0
    assert row["identical"], row
    assert row["gpu_ms"] > 0


def test_decode_rows_cpu_side() -> None:
    rows = gc.decode_rows([("crowd", 5), ("noise", 0)], (17, 64, 88), None, None, repeats=1)
    assert [r["scene"] for r in rows] == ["crowd-5", "noise-0.12"]
    assert rows[0]["persons_cpu"] >= 1 and rows[1]["persons_cpu"] > rows[0]["persons_cpu"]  # noise: many "persons"


def test_amp_harness_runs_both_precisions_on_the_same_weights_and_batches() -> None:
    """On a CPU autocast is off, so the fp32 and 'fp16' runs must give the very same losses: the harness
    starts both from one seed's weights and feeds them the same batches."""
    cfg = gc.train_config(CPU)
    batches = gc.synthetic_batches(cfg, 3)
    fp32, fp16 = gc.amp_rows(cfg, "cpu", batches[1:], warmup=1)
    assert fp32["amp"] == "none" and fp16["amp"] == "fp16" and fp32["steps"] == 2
    assert fp32["finite"] and fp16["losses"] == fp32["losses"] and fp16["max_rel_gap_vs_fp32"] == 0.0
    assert fp32["losses"][0] != fp32["losses"][1]  # the model learns between steps: different batches, new weights
    other = gc.train_steps(cfg, "cpu", "none", batches[1:], seed=1)
    assert other.losses[0] != fp32["losses"][0]  # another seed's weights give another loss: the seed is used


def test_synthetic_batches_are_deterministic_and_fit_the_loss() -> None:
    cfg = gc.train_config(CPU)
    a, b = gc.synthetic_batches(cfg, 1, seed=5)[0], gc.synthetic_batches(cfg, 1, seed=5)[0]
    assert a["image"].shape == (2, 3, 128, 128)
    assert [h.shape[-1] for h in a["heatmaps"]] == [32, 64] and float(a["heatmaps"][1].max()) > 0.9
    assert all(bool((x == y).all()) for x, y in zip(a["joints"], b["joints"], strict=True))


def test_resume_equals_the_straight_run_on_cpu(tmp_path: Path) -> None:
    cfg = gc.train_config(CPU)
    facts = gc.resume_facts(cfg, "cpu", "none", gc.synthetic_batches(cfg, 4, seed=3), tmp_path)
    assert facts["resumed_at_step"] == 2
    assert facts["max_param_diff"] == 0.0
    assert facts["losses_resumed"] == facts["losses_straight"]


def test_ddp_launcher_runs_torchrun_with_gloo(tmp_path: Path) -> None:
    facts = gc.launch_ddp(tmp_path, steps=1, gpu=False, timeout_s=300)
    assert facts["backend"] == "gloo" and facts["world_size"] == 1 and facts["rank"] == 0
    assert len(facts["losses"]) == 1 and np.isfinite(facts["losses"][0])


def test_a_failing_section_is_recorded_and_the_time_box_stops_a_slow_one() -> None:
    def broken(check: gc.Check) -> gc.Result:
        raise RuntimeError("the GPU fell off the bus")

    def slow(check: gc.Check) -> gc.Result:
        time.sleep(5)
        return gc.Result("slow", "ok")

    failed = gc.run_section("broken", broken, CPU, 10)
    assert failed.status == "failed" and failed.error == "RuntimeError: the GPU fell off the bus"
    start = time.perf_counter()
    late = gc.run_section("slow", slow, CPU, 0.2)
    assert late.status == "timeout" and time.perf_counter() - start < 2
    assert "| broken | failed |" in gc.table([failed, late])


def test_predictions_agree(tmp_path: Path) -> None:
    def write(folder: Path, rows: list[dict[str, object]]) -> Path:
        folder.mkdir()
        (folder / "predictions.json").write_text(json.dumps(rows))
        return folder

    kp = [10.0, 20.0, 0.9] * 17
    moved = [10.5, 20.0, 0.9] + kp[3:]
    a = write(
        tmp_path / "a", [{"image_id": 1, "score": 0.9, "keypoints": kp}, {"image_id": 2, "score": 0.5, "keypoints": kp}]
    )
    b = write(tmp_path / "b", [{"image_id": 1, "score": 0.8, "keypoints": moved}])
    got = gc.predictions_agree(a, b)
    assert got == {"images": 2, "images_same_count": 1, "max_keypoint_px": 0.5, "persons_onnx": 2, "persons": 1}


def _run_uninstalled(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The script as on the GPU machine: from the checkout, with the editable install's finder removed."""
    code = (
        "import runpy, sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]\n"
        "sys.path_hooks[:] = [h for h in sys.path_hooks if 'editable' not in repr(h)]\n"
        "sys.path_importer_cache.clear()\n"
        f"sys.argv = ['benchmarks/gpu_check.py', *{list(args)!r}]\n"
        "runpy.run_path('benchmarks/gpu_check.py', run_name='__main__')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_the_script_runs_its_cpu_side_without_the_package_installed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _run_uninstalled("--out", str(out), "--sections", "decode", "network", "end_to_end", "tensorrt", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no GPU found: ran the CPU side only" in proc.stdout
    report = json.loads((out / "gpu_check.json").read_text())
    status = {s["name"]: s["status"] for s in report["sections"]}
    assert status == {"environment": "ok", "decode": "ok", "network": "ok", "end_to_end": "ok", "tensorrt": "skipped"}
    assert (out / "gpu_check.md").read_text().count("\n| ") == 6  # the header and one row per section


def test_the_bootstrap_maps_the_sub_packages(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]\n"
        "sys.path_hooks[:] = [h for h in sys.path_hooks if 'editable' not in repr(h)]\n"
        "sys.path_importer_cache.clear()\n"
        "try:\n    import hhrnet.kernels\n    print('installed')\nexcept ImportError:\n    print('absent')\n"
        f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
        "import gpu_check\ngpu_check.bootstrap()\n"
        "import hhrnet.kernels.decode, hhrnet.export.graph, hhrnet.benchmarks.scenes\n"
        "print(hhrnet.kernels.decode.__file__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, path = proc.stdout.split()[:2]
    assert first == "absent"  # without the bootstrap the mapping is missing: the test removes the install
    assert Path(path) == ROOT / "kernels" / "decode.py"


def test_unknown_section_is_one_error_line(tmp_path: Path) -> None:
    assert gc.main(["--out", str(tmp_path), "--sections", "decoder"]) == 2
