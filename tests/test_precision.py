"""Precision in the graph: node groups, fp16 (fp32 I/O, kept groups), int8 Q/DQ (per-channel symmetric weights,
TensorRT- or CPU-form activations, codec-preprocessed calibration), provenance in the contract, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hhrnet import samples
from hhrnet.errors import ConfigError, InputError

COCO = samples.images("coco")[0].parent


def _load(path: Path):  # onnx ModelProto
    import onnx

    return onnx.load(str(path))


def _inputs() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((2, 3, 128, 192)).astype(np.float32)


def test_node_groups_follow_the_graph_structure(fp32: dict[str, Path]) -> None:
    from hhrnet.export.precision import node_groups

    agg = node_groups(_load(fp32["aggregate"]).graph)
    # HigherHRNet: stage-0 head (heatmaps + tags, also feeding the deconv; the tiny preset's tags add a position
    # term, a 1 x 1 convolution of the coordinate grid), stage-1 head after the deconv
    assert agg["heads"] == ["/model/final_layers.0/Conv", "/model/tag_position.0/Conv", "/model/final_layers.1/Conv"]
    assert agg["stem"] == ["/model/conv1/Conv"] and len(agg["deconv"]) == 1
    ops = {n.name: n.op_type for n in _load(fp32["aggregate"]).graph.node}
    assert {ops[n] for n in agg["aggregate"]} >= {"Resize", "Add", "Div"}  # the in-graph aggregation
    assert not any(ops[n] in ("Conv", "ConvTranspose") for n in agg["aggregate"])
    assert set(agg["aggregate"]).isdisjoint(agg["network"]) and set(agg["heads"]) <= set(agg["network"])
    assert "/model/final_layers.0/Conv" in agg["network"]
    raw = node_groups(_load(fp32["raw"]).graph)
    heads = ["/final_layers.0/Conv", "/tag_position.0/Conv", "/final_layers.1/Conv"]
    assert raw["aggregate"] == [] and raw["heads"] == heads  # no /model


def test_fp16_keeps_io_fp32_and_the_kept_groups(fp32: dict[str, Path], tmp_path: Path) -> None:
    from onnx import TensorProto

    from hhrnet.export.onnx import read_contract
    from hhrnet.export.precision import convert, node_groups
    from hhrnet.runtime.ort import OrtSession

    rep = convert(fp32["aggregate"], tmp_path / "fp16.onnx", "fp16", keep=["aggregate"])
    assert "Cast" in rep.op_types
    model = _load(rep.path)
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in [*model.graph.input, *model.graph.output])
    inits = {t.name: t.data_type for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    stem = nodes["/model/conv1/Conv"]
    assert inits[stem.input[1]] == TensorProto.FLOAT16  # network weights are fp16
    kept = set(node_groups(_load(fp32["aggregate"]).graph)["aggregate"])
    assert set(rep.kept) == kept
    resizes = [n for n in kept if nodes[n].op_type == "Resize"]
    assert resizes  # the aggregation's resizes are among the kept nodes and still run fp32 data
    art = read_contract(rep.path)
    assert art.precision == "fp16" and art.calibration is None
    assert art.extra["kept_fp32"] == ["aggregate"] and art.extra["kept_fp32_nodes"] == len(kept)
    assert art.codec == read_contract(fp32["aggregate"]).codec
    x = _inputs()
    ref, got = OrtSession(fp32["aggregate"])(x), OrtSession(rep.path)(x)
    for r, g in zip(ref, got, strict=True):
        assert g.dtype == np.float32
        err = float(np.abs(r - g).max())
        assert 0 < err < 2e-2 * float(np.abs(r).max())  # rounded like fp16, but close
    # keeping nothing converts the aggregation too: more nodes converted, a different file
    rep_all = convert(fp32["aggregate"], tmp_path / "fp16all.onnx", "fp16", keep=["none"])
    assert rep_all.kept == [] and rep_all.converted > rep.converted


def test_calibration_set_is_the_codecs_own_letterboxed_preprocessing(fp32: dict[str, Path]) -> None:
    from hhrnet.export.onnx import read_contract
    from hhrnet.export.precision import calibration_set
    from hhrnet.images import read_image

    codec = read_contract(fp32["aggregate"]).codec
    cal = calibration_set(COCO, codec, count=3)
    files = samples.images("coco")
    assert len(cal.inputs) == 3 and cal.provenance["count"] == 3 and cal.provenance["available"] == len(files)
    boxed = codec.replace(letterbox=128)
    for x, path in zip(cal.inputs, files, strict=False):
        np.testing.assert_array_equal(x[0], boxed.preprocess(read_image(path)).inputs[0][1])
    assert cal.provenance["letterbox"] == 128
    assert calibration_set(COCO, codec, count=2).provenance["sha256"] != cal.provenance["sha256"]
    assert calibration_set(COCO, codec, count=3).provenance["sha256"] == cal.provenance["sha256"]
    with pytest.raises(InputError, match="no calibration images"):
        calibration_set(Path(__file__).parent, codec)
    with pytest.raises(InputError, match="not found"):
        calibration_set(COCO / "missing", codec)


def _qdq(model):  # onnx ModelProto -> {node name: node}, initializers
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.name: n for n in model.graph.node}, inits


@pytest.mark.parametrize("target", ["tensorrt", "cpu"])
def test_int8_qdq_form_and_provenance(fp32: dict[str, Path], tmp_path: Path, target: str) -> None:
    import onnx

    from hhrnet.export.onnx import read_contract
    from hhrnet.export.opsets import TENSORRT_ONNX_OPS
    from hhrnet.export.precision import convert, tensorrt_problems
    from hhrnet.runtime.ort import OrtSession

    rep = convert(
        fp32["aggregate"],
        tmp_path / "int8.onnx",
        "int8",
        calib_images=COCO,
        calib_count=3,
        method="minmax",
        target=target,
        guarded=False,
    )
    model = _load(rep.path)
    assert set(rep.op_types) <= TENSORRT_ONNX_OPS | {"QuantizeLinear", "DequantizeLinear"}
    nodes, inits = _qdq(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in convs:
        w = producers.get(conv.input[1])
        if conv.name in rep.kept:  # the heads stay float: fp16 for TensorRT, fp32 on the CPU; no DequantizeLinear
            half = target == "tensorrt"
            assert w is None and inits[conv.input[1]].dtype == (np.float16 if half else np.float32)
            x = producers[conv.input[0]]  # fp16 in: a Cast to FLOAT16 in front (the converter's)
            to = next((a.i for a in x.attribute if a.name == "to"), None)
            assert (x.op_type == "Cast" and to == onnx.TensorProto.FLOAT16) if half else x.op_type != "Cast"
            continue
        assert w is not None and w.op_type == "DequantizeLinear"
        q, scale = inits[w.input[0]], inits[w.input[1]]
        assert q.dtype == np.int8 and scale.shape == (q.shape[0],)  # per output channel
        assert not any(inits[w.input[2]]) if len(w.input) > 2 else True  # symmetric weights
        x = producers[conv.input[0]]
        assert x.op_type == "DequantizeLinear"  # activations quantized too
        assert len(conv.input) < 3 or conv.input[2] in inits and inits[conv.input[2]].dtype == np.float32  # float bias
    assert set(rep.kept) == {"/model/final_layers.0/Conv", "/model/tag_position.0/Conv", "/model/final_layers.1/Conv"}
    zero_points = [inits[n.input[2]] for n in nodes.values() if n.op_type == "QuantizeLinear"]
    if target == "tensorrt":
        assert all(z.dtype == np.int8 and not z.any() for z in zero_points)
        assert tensorrt_problems(model) == []
    else:
        assert all(z.dtype == np.uint8 for z in zero_points)
        assert tensorrt_problems(model) and "uint8 zero point" in tensorrt_problems(model)[0]
    # the CPU form folds the network's ReLUs into the quantized outputs before them (no fp32 round trip left
    # between convolutions); the TensorRT form keeps them for TensorRT to fuse, right after their convolutions
    # (NVIDIA's placement: Q/DQ on the inputs of weighted ops, not their outputs)
    relus = [n for n in model.graph.node if n.op_type == "Relu"]
    after_dq = [n for n in relus if producers[n.input[0]].op_type == "DequantizeLinear"]
    after_conv = [n for n in relus if producers[n.input[0]].op_type == "Conv"]
    if target == "cpu":
        assert not after_dq and len(relus) <= 1
    else:  # a ReLU still reads a dequantized tensor only after a residual Add (an Add's output is quantized)
        assert len(after_conv) > 10
        assert all(producers[producers[producers[n.input[0]].input[0]].input[0]].op_type == "Add" for n in after_dq)
    art = read_contract(rep.path)
    cal = art.calibration
    assert art.precision == "int8" and cal is not None
    assert cal["method"] == "minmax" and cal["count"] == 3 and cal["target"] == target
    assert cal["activations"] == ("int8 symmetric" if target == "tensorrt" else "uint8 asymmetric")
    assert cal["sha256"] and cal["letterbox"] == 128 and art.extra["quantized_nodes"] == rep.converted > 0
    assert art.extra["kept_dtype"] == ("fp16" if target == "tensorrt" else "fp32")
    if target == "tensorrt":  # the heads, and nothing else, compute in fp16; graph input and outputs stay fp32
        assert art.extra["kept_fp16_nodes"] == 3  # the two heads and the tags' position term
        assert all(
            t.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for t in [*model.graph.input, *model.graph.output]
        )
    x = _inputs()
    ref, got = OrtSession(fp32["aggregate"])(x), OrtSession(rep.path)(x)
    for r, g in zip(ref, got, strict=True):
        err = float(np.abs(r - g).max())
        assert 0 < err < 0.25 * float(np.abs(r).max())  # quantized, not garbage


def test_kept_blocks_compute_in_fp16_and_nothing_else_changes(fp32: dict[str, Path], tmp_path: Path) -> None:
    """A kept residual unit (conv, conv, Add, ReLUs) in fp16: fp16 weights, one Cast in per outside input, one Cast
    out per output read outside, none inside; every other node untouched; same function up to fp16 rounding."""
    import onnx

    from hhrnet.export.precision import kept_in_fp16
    from hhrnet.runtime.ort import OrtSession

    model = _load(fp32["aggregate"])
    unit = "/model/stage2/stage2.0/branches.0/branches.0.0/"
    kept = [n.name for n in model.graph.node if n.name.startswith(unit) and n.op_type in ("Conv", "Add")]
    assert len(kept) == 3
    half, names = kept_in_fp16(model, kept)
    onnx.checker.check_model(half, full_check=True)
    ops = {n.name: n for n in half.graph.node}
    assert set(names) == {n for n in ops if n.startswith(unit) and ops[n].op_type in ("Conv", "Add", "Relu")}
    inits = {t.name: t for t in half.graph.initializer}
    producer = {o: n for n in half.graph.node for o in n.output}
    f16 = onnx.TensorProto.FLOAT16
    for name in names:
        for i, x in enumerate(ops[name].input):
            if x in inits:
                assert inits[x].data_type == f16  # weights and bias
            elif producer[x].name not in names:  # from outside: through a Cast to fp16
                assert producer[x].op_type == "Cast" and producer[x].attribute[0].i == f16, (name, i)
    casts = [n for n in half.graph.node if n.op_type == "Cast" and n.name not in {c.name for c in model.graph.node}]
    assert len(casts) == 2  # in: the unit's input (one Cast, read by conv1 and the Add); out: the last ReLU's
    before = {n.name: n for n in model.graph.node}
    for n in half.graph.node:  # everything outside the unit is the node it was
        if n.name in before and n.name not in names:
            assert n == before[n.name]
    x = _inputs()
    path = tmp_path / "half.onnx"
    onnx.save(half, str(path))
    for r, g in zip(OrtSession(fp32["aggregate"])(x), OrtSession(path)(x), strict=True):
        err = float(np.abs(r - g).max())
        assert 0 < err < 1e-2 * float(np.abs(r).max())


def test_int8_methods_and_keep_change_the_file(fp32: dict[str, Path], tmp_path: Path) -> None:
    import hashlib

    from hhrnet.export.precision import convert

    digests = set()
    for i, (method, keep) in enumerate(
        [("minmax", None), ("percentile", None), ("entropy", None), ("minmax", ["heads", "stem"])]
    ):
        rep = convert(
            fp32["raw"],
            tmp_path / f"{i}.onnx",
            "int8",
            calib_images=COCO,
            calib_count=2,
            method=method,
            keep=keep,
            guarded=False,
        )
        digests.add(hashlib.sha256(rep.path.read_bytes()).hexdigest())
        if keep:
            assert "/conv1/Conv" in rep.kept
    assert len(digests) == 4


def test_conversion_refusals(fp32: dict[str, Path], tmp_path: Path) -> None:
    from hhrnet.export.precision import convert

    with pytest.raises(InputError, match="int8 needs --calib-images"):
        convert(fp32["aggregate"], tmp_path / "x.onnx", "int8")
    with pytest.raises(InputError, match="calibration method"):
        convert(fp32["aggregate"], tmp_path / "x.onnx", "int8", calib_images=COCO, method="kl")
    with pytest.raises(InputError, match="int8 target"):
        convert(fp32["aggregate"], tmp_path / "x.onnx", "int8", calib_images=COCO, target="tpu")
    with pytest.raises(InputError, match="matches no node"):
        convert(fp32["aggregate"], tmp_path / "x.onnx", "fp16", keep=["no_such_layer"])
    with pytest.raises(InputError, match="precision must be"):
        convert(fp32["aggregate"], tmp_path / "x.onnx", "bf16")
    half = convert(fp32["aggregate"], tmp_path / "h.onnx", "fp16")
    assert half.kept == [] and half.artifact.extra["kept_fp32"] == []  # the measured default keeps nothing
    with pytest.raises(ConfigError, match="already fp16"):
        convert(half.path, tmp_path / "x.onnx", "int8", calib_images=COCO)


def test_cli_export_converts_and_engine_takes_the_files_precision(fp32: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hhrnet.cli.app import app
    from hhrnet.export.onnx import read_contract

    runner = CliRunner()
    out = tmp_path / "m_int8.onnx"
    args = [
        "export",
        "--onnx",
        str(fp32["aggregate"]),
        "--precision",
        "int8",
        "--calib-images",
        str(COCO),
        "--calib-count",
        "2",
        "--calib-method",
        "entropy",
        "--no-guard",
        "--out",
        str(out),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "calibration: entropy on 2 images" in res.output
    art = read_contract(out)
    assert art.precision == "int8" and art.calibration and art.calibration["method"] == "entropy"
    res = runner.invoke(app, ["export", "--format", "engine", "--onnx", str(out), "--precision", "fp16"])
    assert isinstance(res.exception, ConfigError)
    assert "is int8: an engine takes its ONNX file's precision" in str(res.exception)
    res = runner.invoke(app, ["export", "--onnx", str(fp32["aggregate"])])
    assert isinstance(res.exception, ConfigError) and "give --precision fp16 or int8" in str(res.exception)


def test_precision_rows_interleave_and_report_sizes(fp32: dict[str, Path], tmp_path: Path) -> None:
    from hhrnet.benchmarks.latency import precision_rows

    calls: list[str] = []

    def net(label: str):  # a network callable recording its calls
        def run(x: np.ndarray) -> list[np.ndarray]:
            assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32
            calls.append(label)
            return [x]

        return run

    rows = precision_rows([("a", "fp32", net("a"), str(fp32["raw"])), ("b", "int8", net("b"), None)], 64, repeats=3)
    assert calls == ["a", "b"] * 4  # warm-up, then alternating repetitions
    assert [r["variant"] for r in rows] == ["a", "b"] and rows[0]["speedup_vs_first"] == 1.0
    assert rows[0]["onnx_MB"] == round(fp32["raw"].stat().st_size / 2**20, 2) and rows[1]["onnx_MB"] is None
    assert rows[1]["precision"] == "int8" and rows[1]["n"] == 3 and "cpu_flags" in rows[1]


def test_parity_rows_say_how_a_precision_was_made(fp32: dict[str, Path], tmp_path: Path) -> None:
    from hhrnet.benchmarks.parity import precision_info
    from hhrnet.export.onnx import read_contract
    from hhrnet.export.precision import convert

    assert precision_info(read_contract(fp32["raw"])) == {}
    half = convert(fp32["raw"], tmp_path / "h.onnx", "fp16", keep=["heads", "deconv"]).artifact
    assert precision_info(half) == {"kept_fp32": "heads,deconv"}
    q = convert(fp32["raw"], tmp_path / "q.onnx", "int8", calib_images=COCO, calib_count=2, guarded=False).artifact
    assert precision_info(q) == {
        "kept_fp32": "heads",
        "calibration": "percentile 99.999, 2 images",
        "activations": "int8 symmetric",
    }


def test_tensorrt_placement_rules_on_the_graph(fp32: dict[str, Path], tmp_path: Path) -> None:
    """Residual Adds take both inputs in int8 or neither; no quantized activation enters the float aggregation."""
    import onnx

    from hhrnet.export.precision import convert, tensorrt_placement_problems

    heads = convert(fp32["aggregate"], tmp_path / "h.onnx", "int8", calib_images=COCO, calib_count=2, keep=["heads"])
    model = _load(heads.path)
    assert tensorrt_placement_problems(model) == []
    everything = convert(
        fp32["aggregate"], tmp_path / "a.onnx", "int8", calib_images=COCO, calib_count=2, keep=["none"]
    )
    # the heads quantized too: their outputs are not (no Q/DQ on the outputs of weighted ops in this form)
    assert tensorrt_placement_problems(_load(everything.path)) == []
    for n in _load(everything.path).graph.node:  # a conv output is quantized only as a residual Add's input
        assert not (n.op_type == "QuantizeLinear" and n.input[0].startswith("/model/final_layers")), n.name
    # the downsampling convolution taken back to float weights and its output fed straight into the residual
    # Add: one int8 input (the main branch) and one float input; the rule names that Add
    from onnx import numpy_helper

    producer = {o: n for n in model.graph.node for o in n.output}
    _, inits = _qdq(model)
    add = next(n for n in model.graph.node if n.name == "/model/layer1/layer1.0/Add")
    dq = producer[add.input[1]]
    conv = producer[producer[dq.input[0]].input[0]]
    assert dq.op_type == "DequantizeLinear" and conv.op_type == "Conv"
    wdq = producer[conv.input[1]]
    q, scale = inits[wdq.input[0]], inits[wdq.input[1]]
    model.graph.initializer.append(numpy_helper.from_array(q * scale[:, None, None, None], "float_w"))
    conv.input[1] = "float_w"
    add.input[1] = conv.output[0]
    onnx.checker.check_model(model)
    bad = tensorrt_placement_problems(model)
    assert len(bad) == 1 and bad[0].startswith("/model/layer1/layer1.0/Add: residual Add with one int8 input")
