"""The network against this CPU's peak: what ONNX Runtime itself achieves on large convolutions and GEMMs.

Probes (one graph each, built here with ``onnx.helper``, run by the same ONNX Runtime as the networks):

* fp32: ``Conv`` 3x3 256->256 on 1x256x56x56 (1.85 G multiply-adds) and ``MatMul`` 1024^3 (1.07 G);
* int8: the same shapes as ``QLinearConv`` (uint8 activations, int8 weights: the form ORT's x86 kernels
  run on VNNI / AMX) and ``MatMulInteger`` (uint8 x int8 -> int32).

The peak of a precision is the best rate over its probes (best-of-``repeats`` time each). A network's rate
is its multiply-adds (Conv, ConvTranspose, QLinearConv, ConvInteger, MatMul, Gemm, MatMulInteger,
QLinearMatMul; counted from the ONNX graph by shape inference at the timed input) over its median time;
``fraction`` is that rate over the peak of the network's precision. Everything runs with the same ORT
thread count (``threads``, 0 = ORT's default: all cores).

    python -m hhrnet.benchmarks.peak                              # the probes only
    python -m hhrnet.benchmarks.peak --onnx fp32.onnx:fp32 --onnx int8.onnx:int8 --size 512 [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hhrnet.benchmarks.common import Row, environment

CONV = (256, 56, 3)  # channels, side, kernel of the conv probe
GEMM = 1024  # side of the GEMM probe
COLUMNS = ("kind", "name", "precision", "input", "gmacs", "p50_ms", "best_ms", "gmac_per_s", "fraction")
MAC_OPS = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger", "MatMul", "Gemm", "MatMulInteger", "QLinearMatMul")


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any]) -> Any:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "probe", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=onnx.IR_VERSION)


def conv_probe(precision: str, channels: int = CONV[0], side: int = CONV[1], kernel: int = CONV[2]) -> Any:
    """A k x k convolution C -> C on 1 x C x S x S ('same' padding): fp32 Conv or int8 QLinearConv."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    pad = kernel // 2
    shape = [1, channels, side, side]
    w = rng.standard_normal((channels, channels, kernel, kernel)).astype(np.float32) * 0.05
    attrs: dict[str, Any] = {"kernel_shape": [kernel, kernel], "pads": [pad] * 4}
    if precision == "fp32":
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
        node = helper.make_node("Conv", ["x", "w"], ["y"], **attrs)
        return _model([node], [x], [y], [numpy_helper.from_array(w, "w")])
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, shape)
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, shape)
    values: dict[str, np.ndarray] = {
        "xs": np.array(0.02, np.float32),
        "xz": np.array(128, np.uint8),
        "w": np.clip(np.round(w / 0.002), -127, 127).astype(np.int8),
        "ws": np.array(0.002, np.float32),
        "wz": np.array(0, np.int8),
        "ys": np.array(0.05, np.float32),
        "yz": np.array(128, np.uint8),
    }
    inits = [numpy_helper.from_array(v, k) for k, v in values.items()]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], **attrs)
    return _model([node], [x], [y], inits)


def gemm_probe(precision: str, n: int = GEMM) -> Any:
    """An n x n x n matrix product: fp32 MatMul or int8 MatMulInteger (uint8 x int8 -> int32)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    if precision == "fp32":
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])
        w = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "w")
        return _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [x], [y], [w])
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [n, n])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])
    w = numpy_helper.from_array(rng.integers(-127, 128, (n, n)).astype(np.int8), "w")
    return _model([helper.make_node("MatMulInteger", ["x", "w"], ["y"])], [x], [y], [w])


def _static_input(model: Any, shape: Sequence[int]) -> Any:
    """A copy of ``model`` whose first input has the fixed ``shape``."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != len(shape):
        from hhrnet.errors import InputError

        raise InputError(f"input {model.graph.input[0].name} has {len(dims)} dimensions, the timed shape {len(shape)}")
    for d, n in zip(dims, shape, strict=True):
        d.ClearField("dim_param")
        d.dim_value = int(n)
    return model


def count_macs(model: Any, input_shape: Sequence[int]) -> int:
    """Multiply-adds of the convolutions and matrix products of an ONNX model at ``input_shape`` (its first
    input), from ONNX shape inference: Conv-like N Cout Ho Wo (Cin / groups) k_h k_w; ConvTranspose
    N Cin Hi Wi (Cout / groups) k_h k_w; MatMul-like the product of the output shape and the inner size."""
    import onnx

    model = onnx.shape_inference.infer_shapes(_static_input(model, input_shape))
    shapes: dict[str, list[int]] = {}
    for v in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        dims = v.type.tensor_type.shape.dim
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    for node in model.graph.node:  # weights behind a DequantizeLinear (Q/DQ graphs) or a Constant
        if node.op_type == "DequantizeLinear" and node.input[0] in shapes:
            shapes.setdefault(node.output[0], shapes[node.input[0]])
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes.setdefault(node.output[0], list(a.t.dims))
    total = 0
    for node in model.graph.node:
        if node.op_type not in MAC_OPS:
            continue
        weight_at = 3 if node.op_type in ("QLinearConv", "QLinearMatMul") else 1
        x, w, y = shapes.get(node.input[0]), shapes.get(node.input[weight_at]), shapes.get(node.output[0])
        if not x or not w or not y or min(x + w + y) < 0:
            raise ValueError(f"{node.op_type} {node.name!r}: shapes unknown after inference ({x}, {w}, {y})")
        if node.op_type == "ConvTranspose":
            total += int(np.prod(x)) * w[1] * int(np.prod(w[2:]))  # w: (Cin, Cout / groups, kh, kw)
        elif node.op_type in ("Conv", "QLinearConv", "ConvInteger"):
            total += int(np.prod(y)) * w[1] * int(np.prod(w[2:]))  # w: (Cout, Cin / groups, kh, kw)
        else:
            inner = x[-1]
            if node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute):
                inner = x[-2]
            total += int(np.prod(y)) * inner
    return total


def _session(model: Any, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    data = model if isinstance(model, (str, bytes)) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _feed(session: Any, shape: Sequence[int]) -> dict[str, np.ndarray]:
    inp = session.get_inputs()[0]
    rng = np.random.default_rng(0)
    if inp.type == "tensor(uint8)":
        return {inp.name: rng.integers(0, 256, shape).astype(np.uint8)}
    return {inp.name: rng.standard_normal(shape).astype(np.float32)}


def _times(session: Any, feed: dict[str, np.ndarray], repeats: int) -> list[float]:
    session.run(None, feed)  # warm-up: allocation, packing of the weights
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        out.append(time.perf_counter() - start)
    return out


def _row(kind: str, name: str, precision: str, shape: Sequence[int], macs: int, times: Sequence[float]) -> Row:
    best, p50 = min(times), statistics.median(times)
    rate = macs / (best if kind == "probe" else p50) / 1e9  # a peak is the best achieved, a network its median
    return {
        "benchmark": "peak",
        "kind": kind,
        "name": name,
        "precision": precision,
        "input": "x".join(map(str, shape)),
        "gmacs": round(macs / 1e9, 6),
        "p50_ms": round(p50 * 1e3, 3),
        "best_ms": round(best * 1e3, 3),
        "gmac_per_s": round(rate, 1),
    }


def probe_rows(repeats: int = 10, threads: int = 0, conv: tuple[int, int, int] = CONV, gemm: int = GEMM) -> list[Row]:
    """One row per probe (kind 'probe'), fp32 and int8; ``fraction`` = its rate / its precision's peak."""
    rows = []
    for precision in ("fp32", "int8"):
        for name, model, shape in (
            (f"conv{conv[2]}x{conv[2]}", conv_probe(precision, *conv), (1, conv[0], conv[1], conv[1])),
            ("gemm", gemm_probe(precision, gemm), (gemm, gemm)),
        ):
            session = _session(model, threads)
            rows.append(
                _row(
                    "probe",
                    name,
                    precision,
                    shape,
                    count_macs(model, shape),
                    _times(session, _feed(session, shape), repeats),
                )
            )
    for r in rows:
        r["fraction"] = round(r["gmac_per_s"] / peaks(rows)[r["precision"]], 3)
    return rows


def peaks(rows: Sequence[Row]) -> dict[str, float]:
    """Per precision: the best rate (G multiply-adds / s) over the probe rows."""
    out: dict[str, float] = {}
    for r in rows:
        if r["kind"] == "probe":
            out[r["precision"]] = max(out.get(r["precision"], 0.0), float(r["gmac_per_s"]))
    return out


def network_rows(
    networks: Sequence[tuple[str, str, str]], side: int, peak: dict[str, float], repeats: int = 5, threads: int = 0
) -> list[Row]:
    """networks: (label, precision, ONNX path); each timed at 1 x 3 x side x side, interleaved (calls alternate
    so drifting load hits them alike). Rows of kind 'network' with ``fraction`` of ``peak[precision]``."""
    import onnx

    from hhrnet.errors import InputError

    shape = (1, 3, side, side)
    loaded = []
    for label, precision, path in networks:
        if precision not in peak:
            raise InputError(f"{label}: no probe for precision {precision!r}; have {', '.join(peak)}")
        macs = count_macs(onnx.load(path), shape)
        session = _session(path, threads)
        feed = _feed(session, shape)
        session.run(None, feed)
        loaded.append((label, precision, macs, session, feed))
    samples: dict[str, list[float]] = {label: [] for label, *_ in loaded}
    for _ in range(repeats):
        for label, _, _, session, feed in loaded:
            start = time.perf_counter()
            session.run(None, feed)
            samples[label].append(time.perf_counter() - start)
    rows = []
    for label, precision, macs, _, _ in loaded:
        row = _row("network", label, precision, shape, macs, samples[label])
        row["fraction"] = round(row["gmac_per_s"] / peak[precision], 3)
        rows.append(row)
    return rows


def op_profile(path: str, side: int, runs: int = 3, threads: int = 0, top: int = 12) -> list[Row]:
    """Where a network's time goes, from ONNX Runtime's own profiler: per op type (as ORT ran it, after its
    graph fusions), milliseconds per run and share of the summed node time, the ``top`` largest (kind 'op').
    Layout conversions (ReorderInput/ReorderOutput, Transpose), float ops left between quantized ones
    (Resize, Add, Relu next to QuantizeLinear/DequantizeLinear) and an fp32 ConvTranspose show up here."""
    import json
    import tempfile

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feed = _feed(session, (1, 3, side, side))
        session.run(None, feed)  # warm-up, profiled too: dropped below by run count
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = {}
    for e in events:
        args = e.get("args", {})
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and "op_name" in args:
            per_op[args["op_name"]] = per_op.get(args["op_name"], 0.0) + float(e["dur"]) / 1e3 / (runs + 1)
    total = sum(per_op.values()) or 1.0
    ranked = sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
    return [
        {
            "benchmark": "peak",
            "kind": "op",
            "name": op,
            "network": Path(path).name,
            "ms_per_run": round(ms, 2),
            "share": round(ms / total, 3),
        }
        for op, ms in ranked
    ]


def run(
    networks: Sequence[tuple[str, str, str]] = (), side: int = 512, repeats: int = 10, threads: int = 0
) -> list[Row]:
    """The probes, then each network against its precision's peak; every row stamped with the environment."""
    rows = probe_rows(repeats, threads)
    if networks:
        rows += network_rows(networks, side, peaks(rows), max(repeats // 2, 3), threads)
    env = environment("cpu")
    return [r | {"threads": threads or "ort default", **env} for r in rows]


def table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hhrnet.benchmarks.peak", description=__doc__)
    parser.add_argument("--onnx", action="append", default=[], help="PATH:PRECISION of a network (repeatable)")
    parser.add_argument("--size", type=int, default=512, help="network input side")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: ORT's default)")
    parser.add_argument("--profile", action="store_true", help="also each network's time per op type (ORT)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    nets = []
    for item in args.onnx:
        path, _, precision = item.rpartition(":")
        nets.append((path.rsplit("/", 1)[-1], precision, path))
    rows = run(nets, args.size, args.repeats, args.threads)
    sys.stdout.write(table(rows))
    if args.profile:
        for _, _, path in nets:
            ops = op_profile(path, args.size, threads=args.threads)
            sys.stdout.write(f"\n{Path(path).name}: time per op type (ONNX Runtime profiler)\n")
            sys.stdout.write("".join(f"  {r['name']:24} {r['ms_per_run']:9.2f} ms  {r['share']:6.1%}\n" for r in ops))
            rows += ops
    env = rows[0]
    sys.stdout.write(
        f"{env['machine']} ({env.get('cpu_flags', '')}), threads {env['threads']}, {env['date']}, "
        f"commit {env['commit']}\n"
    )
    if args.json:
        from hhrnet.benchmarks.common import write_rows

        write_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
