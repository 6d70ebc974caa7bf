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
from hostile_worker import png_bytes, tiff_header

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
    one_line_error(
        cli(
            "predict",
            str(samples.folder("coco")),
            "--checkpoint",
            str(tiny_ckpt),
            "--out",
            str(tmp_path / "afile" / "sub"),
            cwd=tmp_path,
        ),
        "cannot write to --out",
    )
    one_line_error(
        cli(
            "predict",
            str(samples.folder("coco")),
            "--checkpoint",
            str(tiny_ckpt),
            "--out",
            str(tmp_path / "afile"),
            cwd=tmp_path,
        ),
        "is a file",
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_predict_out_read_only(tmp_path: Path, tiny_ckpt: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    one_line_error(
        cli("predict", str(samples.folder("coco")), "--checkpoint", str(tiny_ckpt), "--out", str(ro), cwd=tmp_path),
        "cannot write to --out",
    )


def test_static_onnx_takes_photos_of_any_size(tmp_path: Path, static_onnx: Path) -> None:
    proc = cli(
        "predict", str(samples.folder("coco")), "--onnx", str(static_onnx), "--out", str(tmp_path / "o"), cwd=tmp_path
    )
    assert proc.returncode == 0 and "4/4 files predicted" in proc.stdout, proc.stderr


def test_onnx_flag_on_a_non_onnx_file(tmp_path: Path) -> None:
    (tmp_path / "m.onnx").write_bytes(b"GIF89a not a model")
    one_line_error(
        cli(
            "predict",
            str(samples.images("coco")[0]),
            "--onnx",
            str(tmp_path / "m.onnx"),
            "--out",
            str(tmp_path / "o"),
            cwd=tmp_path,
        ),
        "not an ONNX model",
    )


def test_export_static_runs_to_the_parity_line(tmp_path: Path, tiny_ckpt: Path) -> None:
    proc = cli("export", "--checkpoint", str(tiny_ckpt), "--static", "--out", str(tmp_path / "s.onnx"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "fixed 256x256 (letterboxed)" in proc.stdout and "parity on 4 images" in proc.stdout


def test_eval_results_with_the_wrong_keypoint_count(tmp_path: Path) -> None:
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps([{"image_id": 785, "category_id": 1, "keypoints": [1.0] * 10, "score": 0.5}]))
    one_line_error(
        cli("eval", "--predictions", str(bad), "--annotations", str(samples.annotation_file("coco")), cwd=tmp_path),
        "entry 0 has 10 keypoint values",
        "needs 51",
    )


@pytest.mark.parametrize("ids", [[999999], []], ids=["unknown-image-ids", "empty"])
def test_eval_warns_when_nothing_can_be_scored(tmp_path: Path, ids: list[int]) -> None:
    dets = [{"image_id": i, "category_id": 1, "keypoints": [1.0] * 51, "score": 0.5} for i in ids]
    (tmp_path / "r.json").write_text(json.dumps(dets))
    proc = cli(
        "eval",
        "--predictions",
        str(tmp_path / "r.json"),
        "--annotations",
        str(samples.annotation_file("coco")),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "warning:" in proc.stderr and ("NOTHING matched" in proc.stderr or "no detections" in proc.stderr)


def test_truncated_jpeg_is_reported_not_predicted(tmp_path: Path, tiny_ckpt: Path) -> None:
    src = samples.images("coco")[0].read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "half.jpg").write_bytes(src[: len(src) // 2])
    (tmp_path / "in" / "whole.jpg").write_bytes(src)
    proc = cli(
        "predict", str(tmp_path / "in"), "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "o"), cwd=tmp_path
    )
    assert proc.returncode == 0 and "1/2 files predicted" in proc.stdout, proc.stderr
    assert "half.jpg: cannot use" in proc.stderr and "truncated JPEG" in proc.stderr
    lines = [json.loads(x) for x in (tmp_path / "o" / "predictions.jsonl").read_text().splitlines()]
    assert {Path(r["file"]).name: "error" in r for r in lines} == {"half.jpg": True, "whole.jpg": False}


def test_random_bytes_as_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "r.pth").write_bytes(np.random.default_rng(1).bytes(2048))
    proc = cli(
        "predict",
        str(samples.images("coco")[0]),
        "--checkpoint",
        str(tmp_path / "r.pth"),
        "--out",
        str(tmp_path / "o"),
        cwd=tmp_path,
    )
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
    one_line_error(
        cli("info", "--checkpoint", str(tiny_ckpt), "--config", "crowdpose_w32_512", cwd=tmp_path),
        "does not match the model",
    )


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
    proc = cli(
        "predict",
        str(samples.images("coco")[0]),
        "--checkpoint",
        str(tiny_ckpt),
        "--out",
        str(tmp_path / "o"),
        cwd=tmp_path,
    )
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
    proc = cli(
        "predict", str(tmp_path / "in"), "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "o"), cwd=tmp_path
    )
    assert proc.returncode == 0 and "1/2 files predicted" in proc.stdout, proc.stderr
    doc = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert doc["failures"][0][0].endswith("bad.png")


# --------------------------------------------------------------------------------------------
# issue 20: hostile input. Bounded memory, video, metrics that refuse to lie, honest outputs, the contract
# checked against the graph, numbers validated where they enter, serving safe by default.
# --------------------------------------------------------------------------------------------

AS_LIMIT = 4 << 30  # address space for the limited runs: a tiny-model predict peaks near 1.5 GB of it


def limited_env() -> dict[str, str]:
    return dict(
        os.environ,
        CI="true",
        NUMBA_DISABLE_CUDA="1",
        COLUMNS="80",
        MALLOC_ARENA_MAX="2",
        NUMBA_NUM_THREADS="2",
        OMP_NUM_THREADS="2",
    )


def limited(args: list[str], cwd: Path, limit: int = AS_LIMIT) -> subprocess.CompletedProcess[str]:
    """``hhrnet ARGS`` under an address-space limit (RLIMIT_AS): an unbounded allocation fails, not the machine."""
    code = (
        f"import resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit})); "
        "from hhrnet.cli.app import main; sys.exit(main(sys.argv[1:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=limited_env(), timeout=900
    )


def worker(limit: int, *job: str) -> subprocess.CompletedProcess[str]:
    """A job of tests/hostile_worker.py under an address-space limit of ``limit`` bytes."""
    return subprocess.run(
        [sys.executable, str(Path(__file__).with_name("hostile_worker.py")), str(limit), *job],
        capture_output=True,
        text=True,
        env=limited_env(),
        timeout=900,
    )


def test_header_size_reads_every_accepted_format() -> None:
    import cv2

    from hhrnet.images import header_size

    for ext, params in (
        (".png", []),
        (".jpg", []),
        (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        (".bmp", []),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
        (".tiff", []),
    ):
        for h, w in ((37, 53), (1, 1), (300, 17), (2, 1000)):
            ok, buf = cv2.imencode(ext, np.zeros((h, w, 3), np.uint8), params)
            assert ok and header_size(buf.tobytes()) == (w, h), (ext, params, h, w)
    assert header_size(tiff_header(20000, 20000)) == (20000, 20000)
    assert header_size(tiff_header(7, 9, big_endian=True)) == (7, 9)
    assert header_size(b"GIF89a\x10\x00\x10\x00") is None and header_size(b"") is None


def test_codec_bounds_the_network_input_and_names_the_sizes() -> None:
    from hhrnet.codec import MAX_INPUT_PIXELS, MAX_INPUT_SIDE, Codec
    from hhrnet.config import TestConfig, apply_overrides, preset
    from hhrnet.errors import ConfigError, InputError

    assert (TestConfig().max_input_pixels, TestConfig().max_input_side) == (MAX_INPUT_PIXELS, MAX_INPUT_SIDE)
    codec = Codec.from_config(preset("coco_w32_512"))
    assert codec.input_hw(640, 480) == (512, 704)  # the official resize, unchanged
    codec.check_size(640, 480)
    with pytest.raises(InputError, match="4000x1: the official resize makes it a 2048000x512 network input"):
        codec.check_size(4000, 1)
    with pytest.raises(InputError, match="400x4"):
        codec.preprocess(np.zeros((4, 400, 3), np.uint8))  # refused before the warp allocates 3.7 GB
    codec.replace(letterbox=512).check_size(4000, 1)  # the letterbox takes any aspect ratio
    wide = Codec.from_config(
        apply_overrides(preset("coco_w32_512"), ["test.max_input_side=16384", "test.max_input_pixels=9000000"])
    )
    wide.check_size(40, 4)  # 512 x 5120 fits the raised bounds
    with pytest.raises(ConfigError, match="over the network input bound"):
        codec.replace(scales=(1.0, 16.0))
    with pytest.raises(ConfigError, match="finite"):
        codec.replace(scales=(1.0, float("nan")))
    with pytest.raises(ConfigError, match="letterbox 8192 is over"):
        codec.replace(letterbox=8192)


def test_codec_of_an_older_artifact_gets_the_default_bounds() -> None:
    from hhrnet.codec import MAX_INPUT_PIXELS, Codec
    from hhrnet.config import preset
    from hhrnet.errors import ConfigError

    data = Codec.from_config(preset("tiny")).to_dict()
    del data["max_input_pixels"], data["max_input_side"], data["tag_dim"]
    old = Codec.from_dict(data)
    assert old.max_input_pixels == MAX_INPUT_PIXELS and old.tag_dim == 1  # before tag_dim: one value per tag
    with pytest.raises(ConfigError, match="tag_dim"):
        Codec.from_dict({**data, "tag_dim": 0})


def test_predict_bounded_under_a_memory_limit(tmp_path: Path, tiny_ckpt: Path) -> None:
    """A 4000x1 PNG (23 GB of network input unbounded) and a 20000x20000 TIFF (1.2 GB decoded) are refused
    from their headers under a 4 GB address-space limit; a.jpg and a.png get two drawings; --out equal to the
    source folder does not predict its own drawings on the next run."""
    import cv2

    src = tmp_path / "src"
    src.mkdir()
    (src / "wide.png").write_bytes(png_bytes(1, 4000))
    (src / "huge.tif").write_bytes(tiff_header(20000, 20000))
    photo = samples.images("coco")[1]
    (src / "a.jpg").write_bytes(photo.read_bytes())
    cv2.imwrite(str(src / "a.png"), cv2.imread(str(photo)))
    for run in (1, 2):
        proc = limited(["predict", str(src), "--checkpoint", str(tiny_ckpt), "--out", str(src)], tmp_path)
        assert proc.returncode == 0 and "2/4 files predicted" in proc.stdout, (run, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr
        assert "wide.png is 4000x1: the official resize makes it a 1024000x256 network input" in proc.stderr
        assert "huge.tif is 20000x20000 pixels; at most 40000000 pixels are accepted" in proc.stderr
        doc = json.loads((src / "predictions.json").read_text())
        assert {k: doc[k] for k in ("complete", "inputs", "finished", "failed", "not_run")} == {
            "complete": True,
            "inputs": 4,
            "finished": 2,
            "failed": 2,
            "not_run": 0,
        }
    assert sorted(p.name for p in src.glob("*_pose.jpg")) == ["a_jpg_pose.jpg", "a_png_pose.jpg"]


def test_eval_bounded_under_a_memory_limit(tmp_path: Path, tiny_ckpt: Path) -> None:
    src = json.loads(samples.annotation_file("coco").read_text())
    first = src["images"][0]
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / first["file_name"]).write_bytes((samples.folder("coco") / first["file_name"]).read_bytes())
    (tmp_path / "img" / "wide.png").write_bytes(png_bytes(1, 4000))
    ann = {
        "images": [first, {"id": 1, "file_name": "wide.png", "width": 4000, "height": 1}],
        "annotations": [a for a in src["annotations"] if a["image_id"] == first["id"]],
        "categories": src["categories"],
    }
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    proc = limited(
        [
            "eval",
            "--checkpoint",
            str(tiny_ckpt),
            "--images",
            str(tmp_path / "img"),
            "--annotations",
            str(tmp_path / "ann.json"),
            "--json",
            str(tmp_path / "e.json"),
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "skipped" in proc.stderr and "wide.png is 4000x1" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "e.json").read_text())["images"] == 2


def test_serving_decode_bounded_under_a_memory_limit(tmp_path: Path) -> None:
    proc = worker(2 << 30, "serve-decode")
    assert proc.returncode == 0, proc.stderr
    assert "tiff image is 20000x20000 pixels; this server accepts at most 40000000" in proc.stdout
    assert "png image is 60000x60000" in proc.stdout and "bmp image is 30000x30000" in proc.stdout
    assert "wide (1, 4000, 3)" in proc.stdout


def test_property_random_images_through_predict_reading_under_a_memory_limit() -> None:
    """Random bytes, forged headers (sizes up to 2^31) and real images of random shape and format through
    predict's reading and preprocessing: each is prepared within the bounds or refused with an HHRNetError,
    under a 2 GB address-space limit (no MemoryError, no other exception)."""
    proc = worker(2 << 30, "property", "150")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    ok, refused = (int(v) for v in proc.stdout.split()[1::2])
    assert ok > 0 and refused > 0, proc.stdout


# video ---------------------------------------------------------------------------------------


def write_clip(path: Path, fourcc: str, frames: int = 3, size: tuple[int, int] = (96, 64)) -> Path:
    import cv2

    photo = cv2.resize(cv2.imread(str(samples.images("coco")[0])), size)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, size)  # type: ignore[attr-defined]
    assert writer.isOpened(), f"OpenCV here cannot write {fourcc} {path.suffix}"
    for i in range(frames):
        writer.write(np.roll(photo, 4 * i, axis=1))
    writer.release()
    return path


def test_video_end_to_end_in_two_containers(tmp_path: Path, tiny_ckpt: Path) -> None:
    import cv2

    (tmp_path / "in").mkdir()
    write_clip(tmp_path / "in" / "walk.mp4", "mp4v", frames=3)
    write_clip(tmp_path / "in" / "run.avi", "MJPG", frames=2)
    (tmp_path / "in" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    proc = cli(
        "predict", str(tmp_path / "in"), "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "o"), cwd=tmp_path
    )
    assert proc.returncode == 0 and "2/3 files predicted" in proc.stdout and "5 video frames" in proc.stdout, (
        proc.stdout,
        proc.stderr,
    )
    assert "broken.mp4: cannot open video" in proc.stderr and "Traceback" not in proc.stderr
    for name, frames in (("walk_pose.mp4", 3), ("run_pose.mp4", 2)):
        cap = cv2.VideoCapture(str(tmp_path / "o" / name))
        read = 0
        while cap.read()[0]:
            read += 1
        cap.release()
        assert read == frames, name
    lines = [json.loads(x) for x in (tmp_path / "o" / "predictions.jsonl").read_text().splitlines()]
    walk = [r for r in lines if r["file"].endswith("walk.mp4")]
    assert [r.get("frame") for r in walk] == [0, 1, 2, None] and len(walk[-1]["frames"]) == 3  # streamed, then whole
    doc = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert doc["complete"] and doc["finished"] == 2 and doc["failed"] == 1
    assert not list((tmp_path / "o").glob(".*tmp*"))


def test_video_writer_names_and_missing_codec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    from hhrnet import predict
    from hhrnet.errors import InputError

    # the old temporary name: OpenCV picks the container from the suffix and fails silently on ".tmp"
    old = cv2.VideoWriter(str(tmp_path / ".a_pose.mp4.tmp"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 32))  # type: ignore[attr-defined]
    assert not old.isOpened()
    writer, tmp, final = predict._open_writer(tmp_path, "a_pose", 10.0, (32, 32))
    assert writer.isOpened() and tmp.name == ".a_pose.tmp.mp4" and final.name == "a_pose.mp4"
    writer.release()
    monkeypatch.setattr(predict, "VIDEO_CODECS", (("XVID", ".nosuchcontainer"),))
    with pytest.raises(InputError, match="OpenCV cannot write a video here"):
        predict._open_writer(tmp_path, "b_pose", 10.0, (32, 32))
    assert not list(tmp_path.glob(".b_pose*"))


# metrics that refuse to lie ------------------------------------------------------------------


def _dets(**changes: object) -> list[dict[str, object]]:
    doc = json.loads(samples.annotation_file("coco").read_text())
    ann = next(a for a in doc["annotations"] if a["num_keypoints"] > 0)
    det = {"image_id": ann["image_id"], "category_id": 1, "keypoints": list(map(float, ann["keypoints"])), "score": 0.9}
    return [{k: v for k, v in {**det, **changes}.items() if v is not None}]


@pytest.mark.parametrize(
    ("dets", "needle"),
    [
        (_dets(keypoints=[float("nan")] * 51), "entry 0 has non-finite (NaN or inf) keypoints or score"),
        (_dets(score=float("inf")), "non-finite"),
        (_dets(score=1e308), "beyond"),
        (_dets(score=None), "entry 0 lacks score"),
        (_dets(keypoints=None), "entry 0 lacks keypoints"),
    ],
    ids=["nan-keypoints", "inf-score", "huge-score", "no-score", "no-keypoints"],
)
def test_eval_refuses_results_it_cannot_score_honestly(dets: list[dict[str, object]], needle: str) -> None:
    from hhrnet.errors import InputError
    from hhrnet.evaluate import evaluate_predictions

    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        evaluate_predictions(dets, samples.annotation_file("coco"))


def test_eval_refuses_ground_truth_without_keypoints_or_annotations(tmp_path: Path) -> None:
    doc = json.loads(samples.annotation_file("coco").read_text())
    (tmp_path / "r.json").write_text(json.dumps(_dets()))
    no_kp = dict(doc, annotations=[{k: v for k, v in a.items() if k != "keypoints"} for a in doc["annotations"]])
    (tmp_path / "nokp.json").write_text(json.dumps(no_kp))
    (tmp_path / "empty.json").write_text(json.dumps(dict(doc, annotations=[])))
    one_line_error(
        cli(
            "eval",
            "--predictions",
            str(tmp_path / "r.json"),
            "--annotations",
            str(tmp_path / "nokp.json"),
            cwd=tmp_path,
        ),
        "annotation 0 lacks keypoints",
    )
    one_line_error(
        cli(
            "eval",
            "--predictions",
            str(tmp_path / "r.json"),
            "--annotations",
            str(tmp_path / "empty.json"),
            cwd=tmp_path,
        ),
        "has no annotations: AP is undefined",
    )
    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps(_dets(keypoints=[float("nan")] * 51)))  # json.dumps writes NaN, as Python reads it
    one_line_error(
        cli("eval", "--predictions", str(nan), "--annotations", str(samples.annotation_file("coco")), cwd=tmp_path),
        "non-finite",
    )


# honest outputs -------------------------------------------------------------------------------


def test_interrupted_predict_is_marked_partial(tmp_path: Path, tiny_ckpt: Path) -> None:
    """Ctrl-C part-way: what was finished is kept, predictions.json says interrupted / complete: false."""
    from hhrnet.load import open_model
    from hhrnet.predict import run_predict

    files = [samples.images("coco")[i % 2] for i in range(4)]
    predictor = open_model(checkpoint=tiny_ckpt).predictor("fast")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "predictions.json").write_text('{"predictions": ["from an earlier run"]}')
    calls = []
    real = predictor.maps

    def interrupt_third(prepared: object) -> object:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(prepared)

    predictor.maps = interrupt_third  # the third network call is where Ctrl-C lands
    with pytest.raises(KeyboardInterrupt):
        run_predict(files, predictor, tmp_path / "o")
    doc = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert {k: doc[k] for k in ("complete", "interrupted", "inputs", "finished", "failed", "not_run")} == {
        "complete": False,
        "interrupted": True,
        "inputs": 4,
        "finished": 2,
        "failed": 0,
        "not_run": 2,
    }
    assert len((tmp_path / "o" / "predictions.jsonl").read_text().splitlines()) == 2


def test_killed_predict_leaves_no_stale_result_looking_current(tmp_path: Path, tiny_ckpt: Path) -> None:
    import signal
    import time

    (tmp_path / "in").mkdir()
    for i in range(40):
        (tmp_path / "in" / f"p{i:02d}.jpg").write_bytes(samples.images("coco")[i % 2].read_bytes())
    out = tmp_path / "o"
    out.mkdir()
    (out / "predictions.json").write_text('{"predictions": ["from an earlier run"], "complete": true}')
    (out / ".walk_pose.tmp.mp4").write_bytes(b"left by a killed run")
    env = dict(os.environ, CI="true", NUMBA_DISABLE_CUDA="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hhrnet",
            "predict",
            str(tmp_path / "in"),
            "--checkpoint",
            str(tiny_ckpt),
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        jsonl = out / "predictions.jsonl"
        if jsonl.is_file() and jsonl.read_text().count("\n") >= 1:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["complete"] is False and doc["inputs"] == 40 and "from an earlier run" not in json.dumps(doc)
    assert not (out / ".walk_pose.tmp.mp4").exists()


def test_symlink_loop_and_duplicates_are_taken_once(tmp_path: Path) -> None:
    from hhrnet.predict import collect_sources

    d = tmp_path / "d"
    d.mkdir()
    for p in samples.images("coco")[:2]:
        (d / p.name).write_bytes(p.read_bytes())
    (d / "loop").symlink_to(tmp_path)
    (d / "again.jpg").symlink_to(d / samples.images("coco")[0].name)
    found = collect_sources(f"{tmp_path}/**/*.jpg")
    assert len(found) == 2 and len({p.resolve() for p in found}) == 2


def test_atomic_write_removes_temporaries_of_a_killed_writer(tmp_path: Path) -> None:
    from hhrnet.io import atomic_write_text

    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f".m.onnx.{dead.pid}.x1y2.tmp").write_bytes(b"half an int8 export")
    (tmp_path / f".m.onnx.{os.getpid()}.live.tmp").write_bytes(b"this process: kept")
    atomic_write_text(tmp_path / "m.onnx", "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".m.onnx.{os.getpid()}.live.tmp", "m.onnx"]


@pytest.mark.parametrize(
    "args",
    [
        ["export", "--checkpoint", "{ck}", "--out", "{dir}"],
        ["export", "--checkpoint", "{ck}", "--out", "{file}/sub/m.onnx"],
        ["eval", "--predictions", "{ann}", "--annotations", "{ann}", "--json", "{dir}"],
        ["eval", "--predictions", "{ann}", "--annotations", "{ann}", "--json", "{file}/e.json"],
        ["config", "tiny", "--out", "{dir}"],
        ["config", "tiny", "--out", "{file}/c.yaml"],
    ],
    ids=["export-dir", "export-unwritable", "eval-json-dir", "eval-json-unwritable", "config-dir", "config-unwritable"],
)
def test_output_paths_checked_before_work(tmp_path: Path, tiny_ckpt: Path, args: list[str]) -> None:
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    subs = {
        "ck": str(tiny_ckpt),
        "dir": str(tmp_path / "adir"),
        "file": str(tmp_path / "afile"),
        "ann": str(samples.annotation_file("coco")),
    }
    proc = cli(*(a.format(**subs) for a in args), cwd=tmp_path)
    one_line_error(proc, "--json" if "--json" in args else "--out")
    assert "is a folder" in proc.stderr or "cannot be written" in proc.stderr


# the contract checked against the graph -------------------------------------------------------


def _with_metadata(model: object, meta: dict[str, str], path: Path) -> Path:
    import onnx

    del model.metadata_props[:]  # type: ignore[attr-defined]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)  # type: ignore[attr-defined]
    onnx.save(model, str(path))
    return path


def test_artifact_checked_against_its_graph(tmp_path: Path, static_onnx: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from hhrnet.codec import Codec
    from hhrnet.config import apply_overrides, preset
    from hhrnet.errors import BackendError
    from hhrnet.runtime.artifact import Artifact
    from hhrnet.runtime.ort import OrtSession

    good = onnx.load(str(static_onnx))
    meta = {p.key: p.value for p in good.metadata_props}
    art = Artifact.from_metadata(meta, "static")
    # an unrelated model with the outputs' names and copied metadata
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 128, 128])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 128, 128]) for n in ("heatmaps", "tags")]
    nodes = [helper.make_node("Identity", ["image"], [n]) for n in ("heatmaps", "tags")]
    graph = helper.make_graph(nodes, "alien", [image], outs)
    alien = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(BackendError, match=r"output 'heatmaps' is \(1, 3, 128, 128\), but the contract \(17 joints"):
        OrtSession(_with_metadata(alien, meta, tmp_path / "alien.onnx"))
    # a 14-joint contract on the 17-joint graph
    cfg = apply_overrides(
        preset("tiny"),
        [
            "data.dataset=crowdpose",
            "model.num_joints=14",
            "data.num_joints=14",
            "data.input_size=128",
            "data.output_size=[32,64]",
        ],
    )
    codec = Codec.from_config(cfg).replace(letterbox=128)
    crowd = Artifact(codec, cfg.to_dict(), art.graph, art.precision, None, art.static_hw, art.hhrnet_version)
    with pytest.raises(BackendError, match="contract \\(14 joints, 14 tag channels, aggregate graph\\) needs"):
        OrtSession(_with_metadata(onnx.load(str(static_onnx)), crowd.metadata(), tmp_path / "c14.onnx"))
    OrtSession(static_onnx)  # the genuine file still opens


# numbers validated where they enter -----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["info", "--config", "tiny", "--set", "train.lr=nan"], "train.lr: expected a finite number, got 'nan'"),
        (["info", "--config", "tiny", "--set", "model.num_joints=1e400"], "model.num_joints: expected a finite"),
        (["info", "--config", "tiny", "--set", "test.detection_threshold=nan"], "test.detection_threshold"),
        (["info", "--config", "tiny", "--set", "test.detection_threshold=2"], "test.detection_threshold=2.0 is out"),
        (["info", "--config", "tiny", "--set", "data.input_size=1000000"], "data.input_size=1000000 is out of range"),
        (["info", "--config", "tiny", "--set", "model.num_joints=17.5"], "expected a whole number"),
        (["predict", "x.jpg", "--random-weights", "--scales", "1,nan"], "--scales must be finite"),
        (["predict", "x.jpg", "--random-weights", "--min-score", "nan"], "--min-score must be a finite number"),
        (["synth", "s", "--size", "0"], "--size=0 is out of range"),
        (["info", "--config", "bad.yaml"], "is not UTF-8 text"),
    ],
    ids=[
        "lr-nan",
        "joints-1e400",
        "threshold-nan",
        "threshold-2",
        "input-size",
        "joints-fraction",
        "scales-nan",
        "min-score-nan",
        "synth-size-0",
        "yaml-not-utf8",
    ],
)
def test_numbers_validated_where_they_enter(tmp_path: Path, args: list[str], needle: str) -> None:
    (tmp_path / "bad.yaml").write_bytes(b"MODEL:\n  NAME: \xff\xfe\n")
    (tmp_path / "x.jpg").write_bytes(samples.images("coco")[0].read_bytes())
    one_line_error(cli(*args, cwd=tmp_path), needle)


# serving safe by default ----------------------------------------------------------------------


def test_serving_binds_loopback_by_default_and_metrics_follow_host() -> None:
    import dataclasses
    import inspect

    from hhrnet.cli.serve import serve
    from hhrnet.serve.server import Endpoints, metrics_binding

    assert Endpoints().host == "127.0.0.1" and inspect.signature(serve).parameters["host"].default == "127.0.0.1"

    @dataclasses.dataclass
    class WithAddress:
        metrics_address: str | None = None

    @dataclasses.dataclass
    class WithoutAddress:
        metrics_port: int | None = None

    assert metrics_binding(WithAddress, "10.0.0.5") == {"metrics_address": "10.0.0.5"}
    assert metrics_binding(WithoutAddress, "127.0.0.1") == {"allow_metrics": False}  # cannot follow: switched off
    assert metrics_binding(WithoutAddress, "0.0.0.0") == {}


def test_demo_defaults_pass_its_own_checks(tmp_path: Path) -> None:
    """`make demo` runs `hhrnet demo` with its defaults: they must pass the command's checks (the --minutes
    default 0, 'off', once failed a range check written for budgets). An unusable --out is then what fails."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    proc = cli("demo", "--out", str(blocker), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--minutes" not in proc.stderr and str(blocker) in proc.stderr
    proc = cli("demo", "--out", str(tmp_path / "d"), "--minutes", "nan", cwd=tmp_path)
    assert proc.returncode == 2 and "--minutes" in proc.stderr
