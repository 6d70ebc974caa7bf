"""The peak benchmark: multiply-adds counted from ONNX graphs (against hand counts), probes and networks rated
against the best probe of their precision, and its CLI's one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from hhrnet.benchmarks import peak  # noqa: E402
from hhrnet.errors import InputError  # noqa: E402


def small_net(path: Path) -> Path:
    """1x3xHxW (dynamic) -> Conv 3x3 s2 3->8 -> Conv 1x1 8->4 in 2 groups on a DequantizeLinear weight (Q/DQ)
    -> ConvTranspose 4x4 s2 4->2 -> MatMul of the last axis by a (W, 5) matrix."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "h", "w"])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.integers(-5, 5, (4, 4, 1, 1)).astype(np.int8), "w2q"),
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
        numpy_helper.from_array(rng.standard_normal((4, 2, 4, 4)).astype(np.float32), "w3"),
        numpy_helper.from_array(rng.standard_normal((32, 5)).astype(np.float32), "m"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("DequantizeLinear", ["w2q", "s", "z"], ["w2"]),
        helper.make_node("Conv", ["a", "w2"], ["b"], kernel_shape=[1, 1], group=2),
        helper.make_node("ConvTranspose", ["b", "w3"], ["c"], kernel_shape=[4, 4], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("MatMul", ["c", "m"], ["out"]),
    ]
    graph = helper.make_graph(nodes, "small", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=onnx.IR_VERSION)
    onnx.save(model, path)
    return path


def test_macs_counted_from_the_graph_equal_hand_counts(tmp_path: Path) -> None:
    assert peak.count_macs(peak.conv_probe("fp32", 8, 10, 3), (1, 8, 10, 10)) == 8 * 8 * 9 * 10 * 10
    assert peak.count_macs(peak.conv_probe("int8", 8, 10, 3), (1, 8, 10, 10)) == 8 * 8 * 9 * 10 * 10
    assert peak.count_macs(peak.gemm_probe("fp32", 16), (16, 16)) == 16**3
    assert peak.count_macs(peak.gemm_probe("int8", 16), (16, 16)) == 16**3
    model = onnx.load(small_net(tmp_path / "n.onnx"))
    conv1 = 8 * 16 * 16 * 3 * 9  # 32x32 input, stride 2: 8 x 16 x 16 outputs of 3 x 3 x 3
    conv2 = 4 * 16 * 16 * 4  # 8 -> 4 channels in 2 groups: 4 inputs each
    deconv = 4 * 16 * 16 * 2 * 16  # every input pixel scatters into 2 channels x 4 x 4
    matmul = 2 * 32 * 32 * 5  # (1, 2, 32, 32) @ (32, 5)
    assert peak.count_macs(model, (1, 3, 32, 32)) == conv1 + conv2 + deconv + matmul
    with pytest.raises(InputError, match="dimensions"):
        peak.count_macs(model, (3, 32, 32))


def test_probes_and_networks_are_rated_against_their_precision(tmp_path: Path) -> None:
    rows = peak.probe_rows(repeats=2, conv=(16, 12, 3), gemm=32)
    assert [(r["name"], r["precision"]) for r in rows] == [
        ("conv3x3", "fp32"),
        ("gemm", "fp32"),
        ("conv3x3", "int8"),
        ("gemm", "int8"),
    ]
    best = peak.peaks(rows)
    for r in rows:
        assert 0 < r["fraction"] <= 1 and r["best_ms"] <= r["p50_ms"]
        assert r["gmac_per_s"] == pytest.approx(r["gmacs"] * 1e3 / r["best_ms"], rel=0.1, abs=0.2)
    assert {p: max(r["fraction"] for r in rows if r["precision"] == p) for p in best} == {"fp32": 1.0, "int8": 1.0}
    path = str(small_net(tmp_path / "n.onnx"))
    net = peak.network_rows([("n", "fp32", path)], 32, best, repeats=3)[0]
    assert net["kind"] == "network" and net["gmacs"] == round(peak.count_macs(onnx.load(path), (1, 3, 32, 32)) / 1e9, 6)
    assert net["fraction"] == pytest.approx(net["gmac_per_s"] / best["fp32"], rel=0.01, abs=1e-3)
    with pytest.raises(InputError, match="no probe for precision 'fp16'"):
        peak.network_rows([("n", "fp16", path)], 32, best)


def test_op_profile_names_the_ops_that_ran(tmp_path: Path) -> None:
    rows = peak.op_profile(str(small_net(tmp_path / "n.onnx")), 32, runs=2)
    names = {r["name"] for r in rows}
    assert {"Conv", "ConvTranspose", "MatMul"} <= names, names
    assert all(r["ms_per_run"] >= 0 for r in rows) and sum(r["share"] for r in rows) == pytest.approx(1, abs=0.01)


def test_cli_refuses_bad_sizes_and_files_without_a_contract(tmp_path: Path) -> None:
    env = dict(os.environ, CI="true", NUMBA_DISABLE_CUDA="1", COLUMNS="80")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hhrnet", "bench", "peak", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
        )

    for args, needle in (
        (("--size", "8"), "--size must be >= 32"),
        (("--onnx", str(small_net(tmp_path / "n.onnx"))), "carries no hhrnet contract"),
    ):
        proc = cli(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and needle in proc.stderr
