"""Precision in the graph: fp16 (mixed, fp32 inputs/outputs) and int8 (explicit Q/DQ) ONNX files.

TensorRT 11 removed weak typing (precision builder flags, implicit int8 calibrators, per-layer precision)
and 10.12+ deprecated it: the precision of a deployed network now lives in the ONNX graph and the engine is
built strongly typed (:mod:`hhrnet.export.tensorrt`). This module makes those graphs from an fp32 export,
with maintained tools, and records what it did in the file's contract (:class:`~hhrnet.runtime.artifact.Artifact`
``precision``, ``calibration``, ``extra``):

* fp16: ONNX Runtime's ``convert_float_to_float16`` with ``keep_io_types`` (the graph still takes and
  returns fp32); the node groups named in ``keep`` stay fp32 behind Cast nodes.
* int8: ``onnxruntime.quantization.quantize_static`` in QDQ format: weights int8 symmetric per output
  channel, activations calibrated on real images that went through the codec's own preprocessing
  (letterboxed to the input size), bias kept in float. Two targets:

  - ``tensorrt`` (default): int8 activations with zero point 0 (symmetric), the only form TensorRT's
    explicit quantization accepts;
  - ``cpu``: uint8 asymmetric activations (U8S8), the form ONNX Runtime's CPU kernels fuse into
    QLinearConv / QLinearAdd; TensorRT refuses such a file (:func:`tensorrt_problems`).

Node groups (found from the graph's structure, not from exporter-specific names): ``stem`` the first
convolution, ``heads`` the convolutions whose outputs feed no other convolution (the heatmap/tag layers),
``deconv`` the transposed convolutions, ``aggregate`` everything the graph computes after the heads (flip
merge, resize, averaging, NMS/top-k: empty for a raw graph).

Dimension letters: B batch, S letterbox side.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hhrnet.choices import METHODS, PRECISIONS, TARGETS
from hhrnet.codec import Codec
from hhrnet.errors import BackendError, ConfigError, InputError
from hhrnet.export.guard import (
    DEFAULT_HOLDOUT,
    DEFAULT_MAX_AP_DROP,
    PROXY_IMAGES,
    Holdout,
    Log,
    Quantizer,
    Scorer,
    calibration_warnings,
    guard,
    holdout_set,
    holdout_warnings,
)
from hhrnet.export.rewrite import deconv_as_conv
from hhrnet.runtime.artifact import Artifact

GROUPS = ("stem", "heads", "deconv", "aggregate")
CONV_OPS = frozenset({"Conv", "ConvTranspose"})
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
INT8_OPS = ("Conv", "ConvTranspose", "Add")  # weighted layers and the residual additions that follow them
# The CPU form (uint8 activations) also hands the ReLUs to the quantizer, which folds each into the range of the
# quantized output before it (zero point 0 clamps at 0): no dequantize -> fp32 ReLU -> quantize round trip
# between convolutions (W32-512: 47 ReLU round trips gone, network 1.8x -> 2.2x fp32's speed). The TensorRT
# form keeps its ReLUs: symmetric int8 cannot clamp at 0, and TensorRT fuses them into the convolutions itself.
CPU_INT8_OPS = INT8_OPS + ("Relu",)

# Defaults chosen by `hhrnet bench parity --variant` on the trained demo model (benchmarks/RESULTS.md,
# "Precision in the graph"): fp16 keeping nothing in fp32 agreed best with fp32 (keeping the aggregation or the
# heads in fp32 only added fp16 rounding at the cast boundary); int8 with the heads in fp32 and percentile
# ranges on 64 images agreed best (entropy gave exactly minmax's ranges in ONNX Runtime 1.32).
DEFAULT_KEEP: dict[str, tuple[str, ...]] = {"fp16": (), "int8": ("heads",)}
DEFAULT_METHOD = "percentile"
DEFAULT_PERCENTILE = 99.999
DEFAULT_CALIB_COUNT = 64


# --------------------------------------------------------------------------------------------
# node groups
# --------------------------------------------------------------------------------------------


def node_groups(graph: Any) -> dict[str, list[str]]:
    """Group name -> node names of an ONNX GraphProto (nodes are in topological order, as ONNX requires).

    A head is a convolution with a path to a graph output that crosses no other convolution (HigherHRNet's
    first head also feeds the deconvolution, so "feeds no convolution" would miss it). ``aggregate`` is what
    lies downstream of the heads and upstream of no convolution. Also returned: ``network``, every node from
    the stem on that is not in ``aggregate``.
    """
    nodes = list(graph.node)
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            if name:
                consumers.setdefault(name, []).append(i)
    outputs = {o.name for o in graph.output}

    def downstream(start: int, through_convs: bool) -> tuple[set[int], bool]:
        """Nodes below ``start`` (stopping at convolutions unless ``through_convs``); whether an output is hit."""
        seen: set[int] = set()
        stack, hit = [start], False
        while stack:
            i = stack.pop()
            for out in nodes[i].output:
                hit = hit or out in outputs
                for j in consumers.get(out, []):
                    if j not in seen and (through_convs or nodes[j].op_type not in CONV_OPS):
                        seen.add(j)
                        stack.append(j)
        return seen, hit

    convs = [i for i, n in enumerate(nodes) if n.op_type in CONV_OPS]
    if not convs:
        raise BackendError("the ONNX graph has no convolution: not an hhrnet network")
    feeds_conv = set(convs)  # nodes with a convolution at or below them, filled bottom-up
    for i in range(len(nodes) - 1, -1, -1):
        if any(j in feeds_conv for out in nodes[i].output for j in consumers.get(out, [])):
            feeds_conv.add(i)
    heads = [i for i in convs if downstream(i, through_convs=False)[1]]
    # a transposed convolution, or the sub-pixel convolution that replaced it (its output read only by DepthToSpace)
    deconv = [
        i
        for i in convs
        if nodes[i].op_type == "ConvTranspose"
        or [nodes[j].op_type for j in consumers.get(nodes[i].output[0], [])] == ["DepthToSpace"]
    ]
    below_heads = set().union(*(downstream(i, through_convs=True)[0] for i in heads))
    aggregate = below_heads - feeds_conv
    stem = convs[0]
    network = ({stem} | downstream(stem, through_convs=True)[0]) - aggregate
    name = [n.name for n in nodes]
    return {
        "stem": [name[stem]],
        "heads": [name[i] for i in heads],
        "deconv": [name[i] for i in deconv],
        "aggregate": [name[i] for i in sorted(aggregate)],
        "network": [name[i] for i in sorted(network)],
    }


def resolve_keep(graph: Any, keep: Sequence[str]) -> list[str]:
    """Node names selected by ``keep``: group names (:data:`GROUPS`) or regular expressions on node names."""
    groups = node_groups(graph)
    names = [n.name for n in graph.node]
    if len(set(names)) != len(names) or "" in names:
        raise BackendError("the ONNX graph has unnamed or duplicate node names; export it with hhrnet export")
    chosen: set[str] = set()
    for item in keep:
        if item in GROUPS:
            chosen.update(groups[item])
            continue
        try:
            pattern = re.compile(item)
        except re.error as exc:
            raise InputError(f"--keep {item!r} is neither a group ({', '.join(GROUPS)}) nor a regex: {exc}") from None
        hits = [n for n in names if pattern.search(n)]
        if not hits:
            raise InputError(f"--keep {item!r} matches no node (groups: {', '.join(GROUPS)})")
        chosen.update(hits)
    return [n for n in names if n in chosen]


# --------------------------------------------------------------------------------------------
# calibration images
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationSet:
    """Network inputs for calibration, and where they came from (recorded in the artifact)."""

    inputs: list[np.ndarray]  # (1, 3, S, S) f32 each, preprocessed by the codec with a letterbox
    provenance: dict[str, Any]
    files: tuple[str, ...] = ()  # file names used (the guard's held-out images are the others)


def calibration_codec(codec: Codec) -> Codec:
    """The codec letterboxed to its own input size (64-aligned): the codec's preprocessing, fixed shape."""
    side = codec.letterbox or -(-codec.input_size // 64) * 64
    return codec.replace(letterbox=side, scales=(1.0,))


def calibration_set(image_dir: str | Path, codec: Codec, count: int = DEFAULT_CALIB_COUNT) -> CalibrationSet:
    """The first ``count`` images of ``image_dir`` (sorted by name), through ``codec.preprocess`` letterboxed.

    The provenance holds the folder, the count, the letterbox side and a SHA-256 over the file names and
    bytes used, so a different calibration set gives a different hash (and a different engine cache key).
    """
    from hhrnet.images import IMAGE_SUFFIXES, decode_image

    root = Path(image_dir)
    if not root.is_dir():
        raise InputError(f"calibration image folder not found: {root}")
    if count < 1:
        raise InputError(f"the calibration count must be positive, got {count}")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no calibration images in {root}")
    boxed = calibration_codec(codec)
    digest = hashlib.sha256()
    inputs = []
    for path in files[:count]:
        data = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(data).digest())
        inputs.append(boxed.preprocess(decode_image(data, str(path))).inputs[0][1][None])  # (1, 3, S, S)
    provenance = {
        "images": str(root),
        "count": len(inputs),
        "available": len(files),
        "letterbox": boxed.letterbox,
        "sha256": digest.hexdigest(),
    }
    return CalibrationSet(inputs, provenance, tuple(p.name for p in files[:count]))


# --------------------------------------------------------------------------------------------
# conversions
# --------------------------------------------------------------------------------------------


@dataclass
class PrecisionReport:
    path: Path
    artifact: Artifact
    kept: list[str]  # node names left in fp32
    converted: int  # nodes converted (fp16) or quantized (int8)
    op_types: list[str] = field(default_factory=list)


def _version(dist: str) -> str:
    from hhrnet.environment import package_version

    return package_version(dist) or "unknown"


def to_fp16(model: Any, keep: Sequence[str]) -> tuple[Any, list[str], dict[str, Any]]:
    """fp16 copy of ``model`` (ModelProto) with fp32 inputs/outputs; (model, kept node names, extra).

    ONNX Runtime's converter (``onnxruntime.transformers.float16``) rather than onnxconverter-common's
    copy of it: the latter also converts Resize's ``scales`` input, which must stay float, and the file
    fails ``onnx.checker`` unless every Resize is blocked (onnxconverter-common 1.16.0, tried here).
    """
    from onnxruntime.transformers import float16

    kept = resolve_keep(model.graph, keep)
    converted = float16.convert_float_to_float16(
        model, keep_io_types=True, node_block_list=kept, op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST)
    )
    sort_topologically(converted.graph)  # the converter appends its input Casts after their consumers
    extra = {
        "tool": f"onnxruntime.transformers.float16 {_version('onnxruntime')}",
        "kept_fp32": list(keep),
        "kept_fp32_nodes": len(kept),
    }
    return converted, kept, extra


def sort_topologically(graph: Any) -> None:
    """Reorder ``graph.node`` so every node follows the producers of its inputs (stable otherwise)."""
    nodes = list(graph.node)
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(range(len(nodes)))
    order: list[int] = []
    while pending:
        rest = []
        for i in pending:
            if all(name in available for name in nodes[i].input):
                order.append(i)
                available.update(nodes[i].output)
            else:
                rest.append(i)
        if len(rest) == len(pending):
            raise BackendError(f"the ONNX graph has a cycle or a missing input near {nodes[rest[0]].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)


def int8_settings(method: str, percentile: float, target: str) -> dict[str, Any]:
    """``quantize_static`` keyword arguments (all but the node selection) for a calibration method and target."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    if method not in METHODS:
        raise InputError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
    if target not in TARGETS:
        raise InputError(f"int8 target must be one of {', '.join(TARGETS)}, got {target!r}")
    if not 0.0 < percentile <= 100.0:
        raise InputError(f"the calibration percentile must be in (0, 100], got {percentile}")
    symmetric = target == "tensorrt"
    extra_options: dict[str, Any] = {
        "ActivationSymmetric": symmetric,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "CalibTensorRangeSymmetric": symmetric,
    }
    if symmetric:  # NVIDIA's placement: Q/DQ on the inputs of weighted ops, not on their outputs (TensorRT fuses)
        extra_options["OpTypesToExcludeOutputQuantization"] = sorted(CONV_OPS)
    if method == "percentile":
        extra_options["CalibPercentile"] = percentile
    calib_method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    return {
        "quant_format": QuantFormat.QDQ,
        "per_channel": True,
        "activation_type": QuantType.QInt8 if symmetric else QuantType.QUInt8,
        "weight_type": QuantType.QInt8,
        "op_types_to_quantize": list(CPU_INT8_OPS if target == "cpu" else INT8_OPS),
        "calibrate_method": calib_method,
        "extra_options": extra_options,
    }


def kept_dtype(target: str) -> str:
    """What an int8 file computes its kept (unquantized) layers in: fp16 for TensorRT (fast fp16 kernels, and
    TensorRT 11 takes precision from the graph only), fp32 for ONNX Runtime's CPU kernels (no fast fp16 there)."""
    return "fp16" if target == "tensorrt" else "fp32"


def kept_in_fp16(model: Any, kept: Sequence[str]) -> tuple[Any, list[str]]:
    """``model`` with the ``kept`` layers (and the ReLUs right after them) computing in fp16 (a copy).

    The kept nodes (convolutions, Adds, ReLUs: ops that take any float type) get fp16 copies of their weights and
    bias, a Cast to fp16 on each input that comes from outside the kept set and a Cast back to fp32 on each output
    read outside it (or a graph output). Nothing else changes: Q/DQ pairs, quantized layers, the aggregation after
    the heads and the graph's input and outputs stay as they were. (ONNX Runtime's fp16 converter, given every
    other node as its block list, still cast the Q/DQ weights of blocked convolutions: not used here.)
    Returns the model and the names of the nodes now in fp16.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    chosen = set(kept)
    producer = {o: n.name for n in graph.node for o in n.output}
    for n in graph.node:  # topological: a ReLU of a kept layer joins it (no fp16 -> fp32 -> fp16 round trip)
        if n.op_type == "Relu" and n.input and producer.get(n.input[0]) in chosen:
            chosen.add(n.name)
    if not chosen:
        return model, []
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    readers: dict[str, list[str]] = {}
    for n in graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n.name)
    half: dict[str, str] = {}  # fp32 tensor -> its fp16 twin
    made: set[str] = set()  # fp16 tensors the kept nodes write
    nodes = []
    for n in graph.node:
        if n.name not in chosen:
            nodes.append(n)
            continue
        for k, name in enumerate(n.input):
            if not name or name in made:
                continue  # empty optional input, or already fp16 (made by a kept node)
            if name not in half:
                half[name] = f"{name}_fp16"
                if name in inits:
                    value = numpy_helper.to_array(inits[name]).astype(np.float16)
                    graph.initializer.append(numpy_helper.from_array(value, half[name]))
                else:
                    nodes.append(
                        helper.make_node("Cast", [name], [half[name]], f"{half[name]}_cast", to=TensorProto.FLOAT16)
                    )
            n.input[k] = half[name]
        nodes.append(n)
        for k, name in enumerate(n.output):
            if name in outputs or any(r not in chosen for r in readers.get(name, [])):
                n.output[k] = f"{name}_fp16"
                nodes.append(helper.make_node("Cast", [n.output[k]], [name], f"{name}_cast_fp32", to=TensorProto.FLOAT))
                for r in graph.node:  # kept readers take the fp16 tensor directly
                    if r.name in chosen and r is not n:
                        for m, x in enumerate(r.input):
                            if x == name:
                                r.input[m] = n.output[k]
        made.update(n.output)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {x for n in graph.node for x in n.input}
    unused = [t for t in graph.initializer if t.name not in used]
    for t in unused:
        graph.initializer.remove(t)
    kept_value_info = [v for v in graph.value_info if producer.get(v.name) not in chosen]
    del graph.value_info[:]
    graph.value_info.extend(kept_value_info)
    sort_topologically(graph)
    return model, [n.name for n in graph.node if n.name in chosen]


def quantizable_nodes(model: Any, target: str, kept: Sequence[str] = ()) -> list[str]:
    """Names of the network's nodes the quantizer is given (graph order), less ``kept``."""
    scope = set(node_groups(model.graph)["network"]) - set(kept)
    op_types = CPU_INT8_OPS if target == "cpu" else INT8_OPS
    return [n.name for n in model.graph.node if n.name in scope and n.op_type in op_types]


def _int8_provenance(calibration: CalibrationSet, method: str, percentile: float, target: str) -> dict[str, Any]:
    symmetric = target == "tensorrt"
    provenance = dict(
        calibration.provenance,
        method=method,
        target=target,
        tool=f"onnxruntime.quantization {_version('onnxruntime')}",
        activations="int8 symmetric" if symmetric else "uint8 asymmetric",
        weights="int8 symmetric per-channel",
    )
    if method == "percentile":
        provenance["percentile"] = percentile
    warnings = calibration_warnings(calibration.inputs)
    if warnings:
        provenance["warnings"] = warnings
    return provenance


def to_int8(
    model: Any,
    calibration: CalibrationSet,
    *,
    keep: Sequence[str],
    method: str = DEFAULT_METHOD,
    percentile: float = DEFAULT_PERCENTILE,
    target: str = "tensorrt",
) -> tuple[Any, list[str], dict[str, Any], dict[str, Any]]:
    """Q/DQ int8 copy of ``model`` keeping the ``keep`` groups/regexes in fp32 (a fixed rule, no measurement);
    (model, kept node names, calibration provenance, extra)."""
    settings = int8_settings(method, percentile, target)
    kept = resolve_keep(model.graph, keep)
    nodes = quantizable_nodes(model, target, kept)
    quantize = Quantizer(model, calibration.inputs, settings)
    try:
        quantized = quantize(nodes)
    finally:
        quantize.close()
    extra = {
        "kept_fp32": list(keep),
        "kept_fp32_nodes": len(kept),
        "quantized_nodes": len(nodes),
        "quantized_ops": list(settings["op_types_to_quantize"]),
        "kept_dtype": kept_dtype(target),
    }
    if kept_dtype(target) == "fp16":  # only layers the quantizer could have taken: the aggregation stays fp32
        layers = set(quantizable_nodes(model, target))
        quantized, half = kept_in_fp16(quantized, [n for n in kept if n in layers])
        extra["kept_fp16_nodes"] = len(half)
    return quantized, kept, _int8_provenance(calibration, method, percentile, target), extra


def to_int8_guarded(
    model: Any,
    calibration: CalibrationSet,
    holdout: Holdout,
    codec: Codec,
    graph: str,
    *,
    max_ap_drop: float = DEFAULT_MAX_AP_DROP,
    method: str = DEFAULT_METHOD,
    percentile: float = DEFAULT_PERCENTILE,
    target: str = "tensorrt",
    log: Log | None = None,
) -> tuple[Any, list[str], dict[str, Any], dict[str, Any]]:
    """Q/DQ int8 copy of ``model`` with the fewest blocks kept in fp32 that hold the held-out loss within
    ``max_ap_drop`` AP points (:mod:`hhrnet.export.guard`); (model, kept node names, calibration provenance,
    extra with the guard's record under ``guard``)."""
    if not max_ap_drop >= 0.0:
        raise InputError(f"--max-ap-drop must be >= 0 AP points, got {max_ap_drop}")
    settings = int8_settings(method, percentile, target)
    nodes = quantizable_nodes(model, target)
    boxed = calibration_codec(codec)
    proxy = [boxed.preprocess(im).inputs[0][1][None] for im in holdout.images[:PROXY_IMAGES]]
    quantize = Quantizer(model, calibration.inputs, settings)
    try:
        scorer = Scorer(model, codec, graph, holdout)
        result = guard(quantize, nodes, scorer, proxy, max_ap_drop=max_ap_drop, graph=graph, log=log)
        final, half = result.model, list[str]()
        if kept_dtype(target) == "fp16" and result.kept:
            # the guard measured its kept blocks in fp32 (ONNX Runtime's CPU kernels); the file keeps them in fp16,
            # so the file as written is scored again and that is the result recorded
            final, half = kept_in_fp16(result.model, result.kept)
            result.record["result_kept_fp32"] = result.record["result"]
            result.record["result"] = scorer.score(final)
            result.record["within_budget"] = result.record["result"]["loss"] <= max_ap_drop
    finally:
        quantize.close()
    result.record["kept_dtype"] = kept_dtype(target)
    provenance = _int8_provenance(calibration, method, percentile, target)
    warnings = holdout_warnings(holdout)
    kept_set = set(result.kept)
    quantized = [n for n in nodes if n not in kept_set]
    if not quantized or not any(n.op_type == "QuantizeLinear" for n in result.model.graph.node):
        how = "true AP drop" if holdout.annotations is not None else "estimated AP drop (no --annotations)"
        warnings.append(
            f"the guard kept every block in float: no int8 variant stayed within {max_ap_drop} AP points by {how}, "
            f"so this file computes in {kept_dtype(target)}; give more held-out images or --annotations, a larger "
            "--max-ap-drop, or --no-guard"
        )
        if log is not None:
            log(f"warning: {warnings[-1]}")
    if warnings:
        provenance["warnings"] = provenance.get("warnings", []) + warnings
    record = dict(result.record, holdout=holdout.provenance)
    extra = {
        "kept_fp32": [b["block"] for b in record["kept"]],
        "kept_fp32_nodes": len(result.kept),
        "quantized_nodes": len(quantized),
        "quantized_ops": list(settings["op_types_to_quantize"]),
        "kept_dtype": kept_dtype(target),
        "guard": record,
    }
    if kept_dtype(target) == "fp16":
        extra["kept_fp16_nodes"] = len(half)
    return final, result.kept, provenance, extra


def tensorrt_problems(model: Any) -> list[str]:
    """Why TensorRT's explicit quantization would refuse ``model``'s Q/DQ nodes (empty list: accepted).

    TensorRT takes int8 Q/DQ with zero point 0 only, and dequantizes int8 tensors only (no int32 bias).
    """
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    problems = []
    for n in model.graph.node:
        if n.op_type not in QDQ_OPS:
            continue
        zp = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if zp is not None and zp.data_type != TensorProto.INT8:
            kind = TensorProto.DataType.Name(zp.data_type).lower()
            problems.append(f"{n.name}: {kind} zero point (TensorRT quantizes to int8 only)")
        elif zp is not None and np.any(numpy_helper.to_array(zp) != 0):
            problems.append(f"{n.name}: non-zero zero point (TensorRT needs symmetric quantization)")
        elif n.op_type == "DequantizeLinear" and n.input[0] in inits:
            if inits[n.input[0]].data_type != TensorProto.INT8:
                problems.append(f"{n.name}: dequantizes a {TensorProto.DataType.Name(inits[n.input[0]].data_type)}")
    return problems


def tensorrt_placement_problems(model: Any) -> list[str]:
    """Where ``model``'s Q/DQ nodes sit against what TensorRT's explicit quantization fuses (empty: all fused).

    An activation is int8 for TensorRT when it comes out of a DequantizeLinear, out of a convolution whose
    input and weights are int8 (TensorRT fuses the output into it), or out of a ReLU of an int8 activation
    (fused as well). Nothing else passes int8 through (conservatively: not Resize).

    * a residual Add must have both inputs int8 (TensorRT fuses it into the convolution before it, taking the
      skip input in int8) or neither: one int8 and one float input keeps the Add, and that convolution's
      output, in float;
    * the aggregation after the heads (flip merge, resize, averaging, NMS) stays float in TensorRT: no
      quantized activation may enter it.
    """
    inits = {t.name for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    aggregate = set(node_groups(model.graph)["aggregate"])
    int8: set[str] = set()  # activations TensorRT has in int8 (or fuses as int8)
    explicit: set[str] = set()  # activations quantized and dequantized in the graph itself
    problems = []

    def dequantized_weight(conv: Any) -> bool:
        w = producer.get(conv.input[1])
        return w is not None and w.op_type == "DequantizeLinear"

    for n in model.graph.node:  # topological order
        data = [i for i in n.input if i and i not in inits]
        if n.op_type == "DequantizeLinear" and data:
            int8.add(n.output[0])
            explicit.add(n.output[0])
        elif n.op_type == "Relu" and data and data[0] in int8:
            int8.add(n.output[0])
            if data[0] in explicit:
                explicit.add(n.output[0])
        elif n.op_type in CONV_OPS and data and data[0] in int8 and dequantized_weight(n):
            int8.add(n.output[0])
        elif n.op_type == "Add" and len(data) == 2:
            flags = [i in int8 for i in data]
            if all(flags):
                int8.add(n.output[0])
            elif any(flags):
                side = data[flags.index(False)]
                src = producer[side].name if side in producer else side
                problems.append(f"{n.name}: residual Add with one int8 input and one float input (from {src})")
        if n.name in aggregate and n.op_type not in QDQ_OPS and any(i in explicit for i in data):
            problems.append(f"{n.name}: a quantized activation enters the aggregation ({n.op_type}), which stays float")
    return problems


def convert(
    onnx_path: str | Path,
    out: str | Path,
    precision: str,
    *,
    calib_images: str | Path | None = None,
    calib_count: int = DEFAULT_CALIB_COUNT,
    method: str = DEFAULT_METHOD,
    percentile: float = DEFAULT_PERCENTILE,
    keep: Sequence[str] | None = None,
    target: str = "tensorrt",
    guarded: bool = True,
    max_ap_drop: float = DEFAULT_MAX_AP_DROP,
    guard_images: str | Path | None = None,
    guard_count: int = DEFAULT_HOLDOUT,
    annotations: str | Path | None = None,
    log: Log | None = None,
) -> PrecisionReport:
    """Write ``out``: the fp32 export ``onnx_path`` at ``precision``, its contract updated to say so.

    fp16: ``keep`` defaults to :data:`DEFAULT_KEEP` (``["none"]``: keep nothing). int8 needs ``calib_images``;
    without ``keep`` and with ``guarded`` it is the accuracy-guarded export (:mod:`hhrnet.export.guard`): held-out
    images are the first ``guard_count`` of ``guard_images`` (default: the calibration folder) that calibration
    did not use, scored against ``annotations`` when given, else against the fp32 file's own poses. An explicit
    ``keep`` (or ``guarded=False``) is a fixed rule: those groups stay fp32 (default: the heads), nothing measured.
    """
    import onnx

    from hhrnet.export.onnx import load_onnx, model_contract, write_contract
    from hhrnet.export.opsets import unsupported_ops
    from hhrnet.io import atomic_write_bytes

    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    model = load_onnx(onnx_path, external_data=True)
    artifact = model_contract(model, str(onnx_path))
    if artifact.precision != "fp32":
        raise ConfigError(f"{onnx_path} is already {artifact.precision}: convert from the fp32 export")
    if precision == "int8" and calib_images is None:
        raise InputError("int8 needs --calib-images: a folder of representative images")
    use_guard = precision == "int8" and guarded and keep is None
    keep = tuple(DEFAULT_KEEP.get(precision, ()) if keep is None else (k for k in keep if k != "none"))
    calibration: dict[str, Any] | None = None
    kept: list[str] = []
    extra: dict[str, Any] = {}
    if precision == "fp32":
        converted = 0
    elif precision == "fp16":
        model, kept, extra = to_fp16(model, keep)
        kept_names = set(kept)
        converted = sum(1 for n in model.graph.node if n.name not in kept_names and n.op_type != "Cast")
    else:
        assert calib_images is not None
        int8_settings(method, percentile, target)  # bad options fail before any image is read
        if use_guard and not max_ap_drop >= 0.0:
            raise InputError(f"--max-ap-drop must be >= 0 AP points, got {max_ap_drop}")
        calib = calibration_set(calib_images, artifact.codec, calib_count)
        subpixel: list[str] = []
        if target == "cpu":  # ONNX Runtime has no int8 ConvTranspose: the same sum as a convolution it quantizes
            model, subpixel = deconv_as_conv(model)
        if use_guard:
            held = guard_images if guard_images is not None else calib_images
            same = Path(held).resolve() == Path(calib_images).resolve()
            holdout = holdout_set(held, calib.files if same else (), guard_count, annotations)
            model, kept, calibration, extra = to_int8_guarded(
                model,
                calib,
                holdout,
                artifact.codec,
                artifact.graph,
                max_ap_drop=max_ap_drop,
                method=method,
                percentile=percentile,
                target=target,
                log=log,
            )
        else:
            model, kept, calibration, extra = to_int8(
                model, calib, keep=keep, method=method, percentile=percentile, target=target
            )
        converted = extra["quantized_nodes"]
        if subpixel:
            extra["subpixel_deconv"] = subpixel
    new = dataclasses.replace(artifact, precision=precision, calibration=calibration, extra=extra)
    write_contract(model, new)
    onnx.checker.check_model(model, full_check=True)
    ops = sorted({n.op_type for n in model.graph.node})
    bad = unsupported_ops(set(ops) - QDQ_OPS)  # Q/DQ: TensorRT's explicit quantization, parsed since 8.0
    if bad:
        raise BackendError(f"the {precision} graph uses ops TensorRT's ONNX parser does not support: {', '.join(bad)}")
    path = Path(out)
    atomic_write_bytes(path, model.SerializeToString())
    return PrecisionReport(path, new, kept, converted, ops)
