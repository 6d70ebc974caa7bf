"""The accuracy-guarded int8 export: blocks, warnings, held-out images, a fragile layer found and kept in float,
the budget honoured when the written file is scored again, and byte-identical re-exports."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_export import TINY_128, tiny_model

from hhrnet import samples
from hhrnet.errors import InputError

COCO = samples.images("coco")[0].parent
# few people per image: an untrained network's maps are noise, and decoding noise for 30 people is slow. The
# formula-weight network needs poses to score: with the tiny preset's 16-channel stem and tag threshold 1.0 it
# finds none on these photos (every AP loss is then 0 and the fragile layer cannot show), with 32 and 0.5 it does
FEW_PEOPLE = TINY_128 + ["data.max_num_people=5", "model.stem_channels=32", "test.tag_threshold=0.5"]
# the official tags: with the tiny preset's position term these formula weights lose ~80 AP points to int8 in the
# blocks other than FRAGILE (a trained model of that preset loses < 1), and the fragile layer could not stand out
FEW_PEOPLE += ["model.tag_dim=1", "model.tag_position=false"]
FRAGILE_A = "/model/stage2/stage2.0/branches.0/branches.0.0/conv1/Conv"  # its ReLU feeds FRAGILE only
FRAGILE = "/model/stage2/stage2.0/branches.0/branches.0.0/conv2/Conv"


def _load(path: Path):  # onnx ModelProto
    import onnx

    return onnx.load(str(path))


def _make_fragile(src: Path, dst: Path) -> None:
    """One input channel of FRAGILE made exactly zero (FRAGILE_A's filter for it zeroed), and FRAGILE's weights
    on that channel made 1000x its largest weight: the fp32 function is unchanged (they multiply zeros), but
    FRAGILE's per-output-channel int8 weight scale now rounds every real weight to zero."""
    import onnx
    from onnx import numpy_helper

    model = _load(src)
    inits = {t.name: t for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}

    def get(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name]).copy()

    def put(name: str, value: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))

    a, b = nodes[FRAGILE_A], nodes[FRAGILE]
    wa, ba, wb = get(a.input[1]), get(a.input[2]), get(b.input[1])
    wa[0], ba[0] = 0.0, 0.0
    wb[:, 0] = 1000.0 * np.abs(wb).max()
    put(a.input[1], wa)
    put(a.input[2], ba)
    put(b.input[1], wb)
    onnx.save(model, str(dst))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from hhrnet.export.onnx import export_onnx

    root = tmp_path_factory.mktemp("guard")
    model, cfg = tiny_model(FEW_PEOPLE)
    export_onnx(model, cfg, root / "agg.onnx", sample_size=(128, 128))
    _make_fragile(root / "agg.onnx", root / "fragile.onnx")
    images = root / "images"  # calibration: the first 2 photos; held out: the other 2
    images.mkdir()
    for p in sorted(COCO.iterdir())[:4]:
        shutil.copy(p, images / p.name)
    return {"aggregate": root / "agg.onnx", "fragile": root / "fragile.onnx", "images": images}


def test_blocks_group_each_convolution_with_its_add_and_merge_past_the_limit(files: dict[str, Path]) -> None:
    from hhrnet.export.guard import blocks
    from hhrnet.export.precision import quantizable_nodes

    model = _load(files["aggregate"])
    nodes = quantizable_nodes(model, "tensorrt")
    units = blocks(model.graph, nodes, max_blocks=1000)  # one block per convolution
    assert sorted(n for _, members in units for n in members) == sorted(nodes)  # a partition
    ops = {n.name: n.op_type for n in model.graph.node}
    members = dict(units)[FRAGILE]
    assert members[0] == FRAGILE and [ops[n] for n in members] == ["Conv", "Add"]  # conv2 + the residual Add
    assert [ops[n] for n in dict(units)[FRAGILE_A]] == ["Conv"]
    assert len(units) == sum(ops[n] in ("Conv", "ConvTranspose") for n in nodes) + 3  # + the stages' fuse Adds
    for limit in (48, 24):  # merged by module path: the residual unit holding FRAGILE becomes one block
        merged = blocks(model.graph, nodes, max_blocks=limit)
        assert 1 < len(merged) <= limit < len(units)
        assert sorted(n for _, m in merged for n in m) == sorted(nodes)
    assert set(dict(blocks(model.graph, nodes))["/model/stage2/stage2.0/branches.0/branches.0.0"]) == {
        FRAGILE_A,
        *dict(units)[FRAGILE],
    }


def test_calibration_warnings_say_too_few_and_too_uniform() -> None:
    from hhrnet.export.guard import calibration_warnings

    rng = np.random.default_rng(0)
    varied = [
        rng.standard_normal((1, 3, 64, 64)).astype(np.float32) * rng.uniform(0.2, 3) + rng.uniform(-2, 2)
        for _ in range(20)
    ]
    assert calibration_warnings(varied) == []
    few = calibration_warnings(varied[:3])
    assert len(few) == 1 and "only 3 calibration images" in few[0]
    same = [varied[0] + 0.001 * rng.standard_normal(varied[0].shape).astype(np.float32) for _ in range(20)]
    uniform = calibration_warnings(same)
    assert len(uniform) == 1 and "nearly uniform" in uniform[0]


def test_holdout_images_are_the_ones_calibration_did_not_use(files: dict[str, Path], tmp_path: Path) -> None:
    import json

    from hhrnet.export.guard import holdout_set

    names = sorted(p.name for p in files["images"].iterdir())
    held = holdout_set(files["images"], names[:2], count=10)
    assert held.provenance["count"] == 2 and held.annotations is None and held.image_ids == [0, 1]
    with pytest.raises(InputError, match="every image there is a calibration image"):
        holdout_set(files["images"], names, count=10)
    ann = {
        "images": [{"id": 7, "file_name": names[3], "height": 1, "width": 1}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 1}],
        "categories": [],
    }
    (tmp_path / "a.json").write_text(json.dumps(ann))
    labelled = holdout_set(files["images"], names[:2], count=10, annotations=tmp_path / "a.json")
    assert labelled.image_ids == [7] and labelled.annotations is not None
    assert len(labelled.annotations["annotations"]) == 1


@pytest.mark.slow
def test_the_guard_keeps_the_fragile_layer_and_only_it(files: dict[str, Path], tmp_path: Path) -> None:
    import onnx

    from hhrnet.export.guard import Quantizer, Scorer, blocks, guard, holdout_set
    from hhrnet.export.onnx import read_contract
    from hhrnet.export.precision import calibration_set, int8_settings, quantizable_nodes

    model = _load(files["fragile"])
    art = read_contract(files["fragile"])
    calib = calibration_set(files["images"], art.codec, 2)
    held = holdout_set(files["images"], calib.files, 2)
    settings = int8_settings("percentile", 99.999, "tensorrt")
    nodes = quantizable_nodes(model, "tensorrt")
    fragile_block = dict(blocks(model.graph, nodes, max_blocks=1000))[FRAGILE]
    quantize = Quantizer(model, calib.inputs, settings)
    try:
        scorer = Scorer(model, art.codec, art.graph, held)
        everything = scorer.score(quantize(nodes))["loss"]
        without = scorer.score(quantize([n for n in nodes if n not in fragile_block]))["loss"]
        assert everything > without + 1.0, (everything, without)  # the fragile layer really costs AP
        budget = (everything + without) / 2
        from hhrnet.export.precision import calibration_codec

        proxy = [calibration_codec(art.codec).preprocess(im).inputs[0][1][None] for im in held.images]
        result = guard(quantize, nodes, scorer, proxy, max_ap_drop=budget, graph=art.graph, max_blocks=1000)
    finally:
        quantize.close()
    assert [b["block"] for b in result.record["kept"]] == [FRAGILE]
    assert result.kept == fragile_block
    top = next(iter(result.record["sensitivity"]))
    assert top == FRAGILE  # measured as the most sensitive block, by far
    others = list(result.record["sensitivity"].values())[1:]
    assert result.record["sensitivity"][FRAGILE] > 10 * max(others)
    assert result.record["result"]["loss"] == without <= budget and result.record["within_budget"]
    onnx.checker.check_model(result.model)
    kept_weights = {n.input[1] for n in result.model.graph.node if n.name == FRAGILE}
    producers = {o: n.op_type for n in result.model.graph.node for o in n.output}
    assert all(w not in producers for w in kept_weights)  # FRAGILE's weights stayed fp32 initializers


@pytest.mark.slow
def test_guarded_export_honours_the_budget_and_reexports_byte_identical(files: dict[str, Path], tmp_path: Path) -> None:
    from hhrnet.export.guard import Scorer, holdout_set
    from hhrnet.export.onnx import read_contract
    from hhrnet.export.precision import convert

    kwargs = {"calib_images": files["images"], "calib_count": 2, "max_ap_drop": 3.0}
    first = convert(files["fragile"], tmp_path / "a.onnx", "int8", **kwargs)
    second = convert(files["fragile"], tmp_path / "b.onnx", "int8", **kwargs)
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (first.path, second.path)]
    assert digest[0] == digest[1]
    g = read_contract(first.path).extra["guard"]
    assert g == second.artifact.extra["guard"] and g["max_ap_drop"] == 3.0
    assert FRAGILE in first.kept and g["holdout"]["count"] == 2
    assert g["within_budget"] and g["result"]["loss"] <= 3.0
    # the written file, scored afresh on the held-out images, loses what the contract says: within the budget
    import onnx

    art = read_contract(files["fragile"])
    calibrated = sorted(p.name for p in files["images"].iterdir())[:2]
    scorer = Scorer(_load(files["fragile"]), art.codec, art.graph, holdout_set(files["images"], calibrated, 2))
    again = scorer.score(onnx.load(str(first.path)))
    assert again == g["result"] and again["loss"] <= 3.0
    assert g["all_quantized"]["loss"] > 3.0  # the guard had work to do
    from typer.testing import CliRunner

    from hhrnet.cli.app import app

    res = CliRunner().invoke(app, ["info", "--onnx", str(first.path)], env={"COLUMNS": "400"})  # no cell wrapping
    assert res.exit_code == 0, res.output
    block = next(b["block"] for b in g["kept"] if FRAGILE in b["nodes"])  # its residual unit, at 48 blocks
    assert "int8 guard" in res.output and block in res.output and "budget 3.0 AP points" in res.output


def test_cli_guard_options_are_checked(files: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hhrnet.cli.app import app

    runner = CliRunner()
    base = [
        "export",
        "--onnx",
        str(files["aggregate"]),
        "--precision",
        "int8",
        "--calib-images",
        str(files["images"]),
        "--calib-count",
        "2",
        "--out",
        str(tmp_path / "x.onnx"),
    ]
    res = runner.invoke(app, [*base, "--max-ap-drop", "-1"])
    assert res.exit_code != 0 and "--max-ap-drop must be >= 0" in str(res.exception) + res.output
    res = runner.invoke(app, [*base, "--calib-count", "4"])
    assert res.exit_code != 0 and "every image there is a calibration image" in str(res.exception) + res.output


def test_a_guard_that_keeps_everything_in_float_says_so(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When no int8 variant stays within the budget the file computes in float, and its contract (and the log)
    must say so, not just "int8". The score is replaced by one that fails every file holding a QuantizeLinear, so
    the guard has to go all the way; the TensorRT form then computes in fp16, the CPU form in fp32."""
    from hhrnet.export import guard
    from hhrnet.export.onnx import read_contract
    from hhrnet.export.precision import convert

    def strict(self: guard.Scorer, model: object) -> dict[str, float]:
        quantized = any(n.op_type == "QuantizeLinear" for n in model.graph.node)  # type: ignore[attr-defined]
        return {"loss": 9.0 if quantized else 0.0, "agreement": 0.5 if quantized else 1.0}

    monkeypatch.setattr(guard.Scorer, "score", strict)
    for target, dtype in (("tensorrt", "fp16"), ("cpu", "fp32")):
        said: list[str] = []
        out = convert(
            files["aggregate"],
            tmp_path / f"q_{target}.onnx",
            "int8",
            calib_images=files["images"],
            calib_count=2,
            target=target,
            log=said.append,
        )
        art = read_contract(out.path)
        assert art.extra["guard"]["kept"] and not any(n.op_type == "QuantizeLinear" for n in _load(out.path).graph.node)
        assert art.extra["kept_dtype"] == art.extra["guard"]["kept_dtype"] == dtype
        warning = [w for w in art.calibration["warnings"] if "kept every block in float" in w]
        assert warning and f"computes in {dtype}" in warning[0] and "--annotations" in warning[0]
        assert any(line.startswith("warning: the guard kept every block") for line in said)


def test_label_free_truth_is_fp32s_confident_poses() -> None:
    """The label-free ground truth keeps the poses scoring >= CONFIDENT x their image's best, per image."""
    from hhrnet.export.guard import CONFIDENT, confident_poses

    def pose(image: int, score: float) -> dict[str, object]:
        return {"image_id": image, "score": score, "bbox": [0, 0, 10, 20], "keypoints": [1.0, 2.0, 0.5] * 17}

    ref = [pose(1, 0.8), pose(1, 0.8 * CONFIDENT + 1e-3), pose(1, 0.8 * CONFIDENT - 1e-3), pose(2, 0.05), pose(2, 0.01)]
    truth = confident_poses(ref, [{"id": 1, "height": 9, "width": 9}, {"id": 2, "height": 9, "width": 9}])
    assert [(a["image_id"]) for a in truth["annotations"]] == [1, 1, 2]  # image 2's best counts, however low
    assert all(a["num_keypoints"] == 17 and a["area"] == 200 for a in truth["annotations"])


def test_identical_predictions_agree_fully_even_past_cocos_detection_limit() -> None:
    """Agreement AP of predictions with themselves is 1, also for an image with more poses than COCO scores (20):
    the reference keeps, as ground truth, only the poses COCO would score as detections (its 20 best)."""
    from hhrnet.export.guard import COCO_MAX_DETS, agreement_ap, as_ground_truth

    rng = np.random.default_rng(0)
    poses = []
    for k in range(COCO_MAX_DETS + 8):  # separate people on one image, scores in no order
        x, y = 30.0 * (k % 7) + 10, 60.0 * (k // 7) + 10
        kps = np.stack([x + rng.uniform(0, 20, 17), y + rng.uniform(0, 40, 17), np.full(17, 0.5)], 1)
        poses.append(
            {
                "image_id": 1,
                "category_id": 1,
                "score": float(rng.uniform(0.2, 0.9)),
                "bbox": [x, y, 20.0, 40.0],
                "keypoints": kps.ravel().tolist(),
            }
        )
    images = [{"id": 1, "height": 300, "width": 300}]
    truth = as_ground_truth(poses, images)
    best = sorted(range(len(poses)), key=lambda i: -poses[i]["score"])[:COCO_MAX_DETS]
    assert [a["id"] - 1 for a in truth["annotations"]] == sorted(best)  # the 20 best, in the given order
    assert agreement_ap(poses, poses, images, "coco") == 1.0
    assert agreement_ap(poses[::2], poses, images, "coco") < 1.0  # and it still sees a missing pose
