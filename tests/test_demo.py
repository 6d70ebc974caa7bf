"""The main job's summary: a readable table that says how good the model is and that it does not transfer to
photos; a re-run keeps the first run's training figures (slow: the whole job on a few images)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hhrnet.benchmarks.demo import NO_TRANSFER, DemoSummary, verdict


def _numbers(ap: float, resumed: bool) -> dict:
    return {
        "val_AP": ap,
        "val_AP50": 0.9,
        "val_AR": 0.6,
        "val_images": 60,
        "train_minutes": 6.0,
        "train_resumed": resumed,
        "epochs": 21.5,
        "steps": 1075,
        "train_images_per_s": 23.9,
        "grouped": 0.91,
        "joining_figures": {"poses": 120, "joining": 30, "images": 21},
        "onnx_max_abs_error": 2e-6,
        "onnx_decoded_positions_identical": True,
        "parity": {
            "onnxruntime fp32 + fast": {
                "AP": ap,
                "delta_AP_points": -0.05,
                "agreement_AP": 0.998,
                "gate": 0.1,
                "passed": True,
            }
        },
        "total_ms_p50": {"torch": 21.0},
        "sample_people": 4,
        "sample_poses_found": 12,
        "demo_minutes": 9.9,
    }


def test_verdict_bands() -> None:
    assert verdict(0.62).startswith("good") and verdict(0.5).startswith("good")
    assert verdict(0.35).startswith("fair") and verdict(0.05).startswith("poor")


def test_rows_are_labelled_and_honest() -> None:
    rows = DemoSummary(Path("x"), {"drawing": "x/sample_pose.jpg"}, _numbers(0.31, resumed=True)).rows()
    table = {what: (value, note) for what, value, note in rows}
    assert table["val AP (OKS .50:.95)"][0] == "0.310" and table["val AP (OKS .50:.95)"][1].startswith("fair")
    assert table["real photos"] == ("not supported", NO_TRANSFER) and "does not transfer" in NO_TRANSFER
    assert table["training"][0] == "6.0 min, 21.5 epochs, 1075 steps, 24 img/s"
    assert "first run" in table["training"][1]
    assert table["tags group people"][0] == "91%"
    assert (
        table["poses joining figures"][0] == "30 of 120 (25%)"
        and "(21 of 60 images)" in table["poses joining figures"][1]
    )
    value, note = table["parity: onnxruntime fp32 + fast"]
    assert value == "ΔAP -0.05 points, agreement AP 0.998" and note.startswith("passed") and "±0.1" in note
    assert [w for w, _, _ in rows][:3] == ["val AP (OKS .50:.95)", "val AP50 / AR", "real photos"]
    assert table["sample image"][0] == "4 people drawn" and table["sample image"][1].startswith("of 12 poses found")
    fresh = {w: n for w, _, n in DemoSummary(Path("x"), {}, _numbers(0.6, resumed=False)).rows()}
    assert fresh["training"] == "" and fresh["val AP (OKS .50:.95)"].startswith("good")
    assert table["ONNX vs PyTorch"] == ("max |error| 2.00e-06", "decoded positions identical")
    moved = dict(_numbers(0.6, resumed=False), onnx_decoded_positions_identical=False)
    moved["onnx_decoded"] = {"images": 4, "differing": 1, "max_px": 1.0}
    onnx = {w: n for w, _, n in DemoSummary(Path("x"), {}, moved).rows()}["ONNX vs PyTorch"]
    assert onnx.startswith("decoded poses differ on 1 of 4 val images (largest joint shift 1.0 px")


@pytest.mark.slow
def test_rerun_keeps_first_run_figures(tmp_path: Path) -> None:
    from hhrnet.benchmarks.demo import run_demo

    lines: list[str] = []
    first = run_demo(tmp_path, epochs=2, train_images=16, val_images=4, log=lines.append)
    again = run_demo(tmp_path, epochs=2, train_images=16, val_images=4, log=lines.append)
    assert first.numbers["train_resumed"] is False and again.numbers["train_resumed"] is True
    for key in ("train_minutes", "epochs", "steps", "train_images_per_s", "val_AP"):
        assert again.numbers[key] == first.numbers[key], key
    assert (first.numbers["steps"], first.numbers["epochs"]) == (4, 2)  # a fixed number of steps: 2 x 16 / 8
    assert any("for 4 steps (2 epochs of 16 images, seed" in line for line in lines)
    assert any("reusing the synthetic data" in line for line in lines)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["numbers"]["train_minutes"] == first.numbers["train_minutes"]


def test_reference_check_compares_the_decoders_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's live check of the official parse against the fast decoder (same maps): equal on real photos
    through the tiny network, and a fast decoder that moves one joint by one ulp is counted on every image."""
    import numpy as np

    from hhrnet import samples
    from hhrnet.benchmarks.demo import reference_check
    from hhrnet.codec import resolve_codec
    from hhrnet.config import preset
    from hhrnet.inference import Predictor, torch_network
    from hhrnet.model import build_model

    cfg = preset("tiny")
    net, codec = torch_network(build_model(cfg)), resolve_codec(cfg, flip=False)
    photos = Path(samples.__file__).parent / "coco"
    assert reference_check(net, codec, photos, 2) == {"images": 2, "differ": 0}
    honest = Predictor.decode

    def off_by_one_ulp(self: Predictor, maps: object) -> tuple[np.ndarray, np.ndarray]:
        poses, scores = honest(self, maps)  # type: ignore[arg-type]
        return poses, np.nextafter(scores, np.float32(2)) if len(scores) else np.ones(1, np.float32)

    monkeypatch.setattr(Predictor, "decode", off_by_one_ulp)
    assert reference_check(net, codec, photos, 2) == {"images": 2, "differ": 2}
    rows = {
        w: (v, n) for w, v, n in DemoSummary(Path("x"), {}, {"reference_check": {"images": 20, "differ": 3}}).rows()
    }
    assert rows["reference vs fast decoder"][0] == "DIFFER on 3 on 20 val images"


def test_cpu_steal_share_and_its_note() -> None:
    from hhrnet.benchmarks.demo import cpu_times, steal_percent

    assert steal_percent((100, 1000), (150, 1500)) == 10.0
    assert steal_percent(None, (1, 2)) is None and steal_percent((5, 10), (5, 10)) is None
    now = cpu_times()
    if Path("/proc/stat").exists():
        assert now is not None and 0 <= now[0] <= now[1]
    numbers = dict(_numbers(0.6, resumed=False), train_cpu_steal_percent=21.6)
    table = {w: n for w, _, n in DemoSummary(Path("x"), {}, numbers).rows()}
    assert table["training"] == "CPU steal 22 % (time the hypervisor gave to other guests)"
