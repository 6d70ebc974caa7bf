"""Bad input, one case each: every one gets one clear line (exit 2, no traceback) or a per-file report, and
nothing is lost or left unreadable. Cases from the fresh-clone review, plus the ones already handled."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hhrnet import samples


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CI="true", NUMBA_DISABLE_CUDA="1", COLUMNS="80")
    return subprocess.run([sys.executable, "-m", "hhrnet", *args], capture_output=True, text=True, cwd=cwd, env=env)


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(n in last for n in needles), proc.stderr


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hhrnet.checkpoint import make_payload, save_checkpoint
    from hhrnet.config import preset
    from hhrnet.model import build_model

    cfg = preset("tiny")
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.pth", make_payload(build_model(cfg), cfg))


@pytest.fixture(scope="module")
def static_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_export import tiny_model

    from hhrnet.export.onnx import export_onnx

    model, cfg = tiny_model(["data.input_size=128", "data.output_size=[32,64]"])
    return export_onnx(model, cfg, tmp_path_factory.mktemp("onnx") / "static.onnx", static=True).path


def test_predict_out_under_a_file_fails_before_any_work(tmp_path: Path, tiny_ckpt: Path) -> None:
    (tmp_path / "afile").write_text("x")
    one_line_error(cli("predict", str(samples.folder("coco")), "--checkpoint", str(tiny_ckpt), "--out",
                       str(tmp_path / "afile" / "sub"), cwd=tmp_path), "cannot write to --out")  # fmt: skip
    one_line_error(cli("predict", str(samples.folder("coco")), "--checkpoint", str(tiny_ckpt), "--out",
                       str(tmp_path / "afile"), cwd=tmp_path), "is a file")  # fmt: skip


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_predict_out_read_only(tmp_path: Path, tiny_ckpt: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    one_line_error(cli("predict", str(samples.folder("coco")), "--checkpoint", str(tiny_ckpt), "--out", str(ro),
                       cwd=tmp_path), "cannot write to --out")  # fmt: skip


def test_static_onnx_takes_photos_of_any_size(tmp_path: Path, static_onnx: Path) -> None:
    proc = cli("predict", str(samples.folder("coco")), "--onnx", str(static_onnx), "--out", str(tmp_path / "o"),
               cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0 and "4/4 files predicted" in proc.stdout, proc.stderr


def test_onnx_flag_on_a_non_onnx_file(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"GIF89a not a model")
    one_line_error(cli("predict", str(samples.images("coco")[0]), "--onnx", str(tmp_path / "m.onnx"), "--out",
                       str(tmp_path / "o"), cwd=tmp_path), "not an ONNX model")  # fmt: skip


def test_export_static_runs_to_the_parity_line(tmp_path: Path, tiny_ckpt: Path) -> None:
    proc = cli("export", "--checkpoint", str(tiny_ckpt), "--static", "--out", str(tmp_path / "s.onnx"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "fixed 256x256 (letterboxed)" in proc.stdout and "parity on 4 images" in proc.stdout


def test_eval_results_with_the_wrong_keypoint_count(tmp_path: Path) -> None:
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps([{"image_id": 785, "category_id": 1, "keypoints": [1.0] * 10, "score": 0.5}]))
    one_line_error(cli("eval", "--predictions", str(bad), "--annotations", str(samples.annotation_file("coco")),
                       cwd=tmp_path), "entry 0 has 10 keypoint values", "needs 51")  # fmt: skip


@pytest.mark.parametrize("ids", [[999999], []], ids=["unknown-image-ids", "empty"])
def test_eval_warns_when_nothing_can_be_scored(tmp_path: Path, ids: list[int]) -> None:
    dets = [{"image_id": i, "category_id": 1, "keypoints": [1.0] * 51, "score": 0.5} for i in ids]
    (tmp_path / "r.json").write_text(json.dumps(dets))
    proc = cli("eval", "--predictions", str(tmp_path / "r.json"), "--annotations",
               str(samples.annotation_file("coco")), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "warning:" in proc.stderr and ("NOTHING matched" in proc.stderr or "no detections" in proc.stderr)


def test_truncated_jpeg_is_reported_not_predicted(tmp_path: Path, tiny_ckpt: Path) -> None:
    src = samples.images("coco")[0].read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "half.jpg").write_bytes(src[: len(src) // 2])
    (tmp_path / "in" / "whole.jpg").write_bytes(src)
    proc = cli("predict", str(tmp_path / "in"), "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "o"),
               cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0 and "1/2 files predicted" in proc.stdout, proc.stderr
    assert "half.jpg: cannot use" in proc.stderr and "truncated JPEG" in proc.stderr
    lines = [json.loads(x) for x in (tmp_path / "o" / "predictions.jsonl").read_text().splitlines()]
    assert {Path(r["file"]).name: "error" in r for r in lines} == {"half.jpg": True, "whole.jpg": False}


def test_random_bytes_as_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "r.pth").write_bytes(np.random.default_rng(1).bytes(2048))
    proc = cli("predict", str(samples.images("coco")[0]), "--checkpoint", str(tmp_path / "r.pth"), "--out",
               str(tmp_path / "o"), cwd=tmp_path)  # fmt: skip
    one_line_error(proc, "is not a PyTorch checkpoint")
    assert "weights_only" not in proc.stderr


def test_pickle_attack_is_refused(tmp_path: Path) -> None:
    import torch

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"state_dict": {}, "x": Evil()}, tmp_path / "e.pth")
    one_line_error(cli("info", "--checkpoint", str(tmp_path / "e.pth"), cwd=tmp_path), "refused", "posix.system")
    assert not (tmp_path / "pwned").exists()


def test_truncated_and_wrong_dataset_checkpoints(tmp_path: Path, tiny_ckpt: Path) -> None:
    data = tiny_ckpt.read_bytes()
    (tmp_path / "t.pth").write_bytes(data[: len(data) // 2])
    one_line_error(cli("info", "--checkpoint", str(tmp_path / "t.pth"), cwd=tmp_path), "corrupt or truncated")
    one_line_error(cli("info", "--checkpoint", str(tiny_ckpt), "--config", "crowdpose_w32_512", cwd=tmp_path),
                   "does not match the model")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["info", "--config", "tiny", "--set", "train.lr=fast"], "train.lr: expected float, got 'fast'"),
        (["info", "--config", "tiny", "--set", "train.lrr=1"], "did you mean 'train.lr'"),
        (["info", "--config", "coco_w32_521"], "did you mean 'coco_w32_512'"),
        (["info", "--config", "missing.yaml"], "config file not found"),
        (["predict", "nothing/here/*.jpg", "--random-weights"], "no images or videos found"),
    ],
    ids=["set-wrong-type", "set-typo", "preset-typo", "missing-yaml", "no-inputs"],
)
def test_config_and_input_errors(tmp_path: Path, args: list[str], needle: str) -> None:
    one_line_error(cli(*args, cwd=tmp_path), needle)


def test_outputs_respect_the_umask(tmp_path: Path, tiny_ckpt: Path) -> None:
    proc = cli("predict", str(samples.images("coco")[0]), "--checkpoint", str(tiny_ckpt), "--out",
               str(tmp_path / "o"), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    mask = os.umask(0)
    os.umask(mask)
    for name in ("predictions.json", f"{samples.images('coco')[0].stem}_pose.jpg"):
        mode = stat.S_IMODE((tmp_path / "o" / name).stat().st_mode)
        assert mode == 0o666 & ~mask, (name, oct(mode))


def test_corrupt_image_among_good_ones_is_per_file(tmp_path: Path, tiny_ckpt: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (tmp_path / "in" / "good.jpg").write_bytes(samples.images("coco")[1].read_bytes())
    proc = cli("predict", str(tmp_path / "in"), "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "o"),
               cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0 and "1/2 files predicted" in proc.stdout, proc.stderr
    doc = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert doc["failures"][0][0].endswith("bad.png")
