"""ONNX export: the network (and, by default, the test-time aggregation) as one graph carrying its contract.

``export_onnx(model, cfg, path, graph=...)`` builds the graph the :class:`~hhrnet.codec.Codec` describes
(flip, stage masks, projection, NMS kernel and top-k all come from it), writes the artifact metadata
(:mod:`hhrnet.runtime.artifact`: codec, config, graph, precision), runs ``onnx.checker`` (full check),
asserts every op is one TensorRT's parser supports, writes the file atomically and, on request, compares
ONNX Runtime with PyTorch at several shapes.

Graphs: ``aggregate`` (default: the host only decodes), ``peaks`` (NMS + top-k in the graph too) and
``raw`` (network outputs only; the host aggregates in torch's exact arithmetic).
A static export fixes the input to the codec's letterbox square, which the codec then uses for every image.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hhrnet.codec import Codec, resolve_codec
from hhrnet.errors import BackendError, ConfigError
from hhrnet.graphs import Graph, graph_kind
from hhrnet.runtime.artifact import Artifact


@dataclass
class ExportReport:
    path: Path
    graph: str
    opset: int
    op_types: list[str]
    nodes: int
    artifact: Artifact
    max_abs_error: dict[str, float] = field(default_factory=dict)  # "BxCxHxW/output" -> error


def build_graph(model: Any, codec: Codec, graph: Graph) -> Any:
    """The torch module whose export is the ``graph`` variant of ``codec``'s pipeline around ``model``."""
    from hhrnet.export.graph import AggregateGraph, PeaksGraph

    kind = graph_kind(graph)
    if not kind.aggregates:
        return model
    agg = AggregateGraph(
        model,
        num_joints=codec.num_joints,
        flip_index=codec.flip_index,
        flip=codec.flip,
        with_heatmaps=codec.stage_heatmaps,
        with_ae=codec.stage_tags,
        tag_dim=codec.tag_dim,
        project=codec.project2image,
    )
    if not kind.peaks:
        return agg
    if codec.drop_center:
        raise ConfigError("the peaks graph cannot drop a centre channel; export the aggregate graph")
    return PeaksGraph(agg, top_k=codec.decode.max_num_people, nms_kernel=codec.decode.nms_kernel)


def make_artifact(cfg: Any, codec: Codec, graph: str, static: bool) -> Artifact:
    """The contract of an export of ``cfg`` with ``codec``; a static export letterboxes (:meth:`Codec.letterboxed`)."""
    import hhrnet

    if static:
        codec = codec.replace(scales=(1.0,)).letterboxed()
    hw = (codec.letterbox, codec.letterbox) if static else None
    return Artifact(codec, cfg.to_dict(), graph, "fp32", None, hw, hhrnet.__version__)


def export_onnx(
    model: Any,
    cfg: Any,
    path: str | Path,
    *,
    graph: Graph = "aggregate",
    codec: Codec | None = None,
    opset: int = 17,
    static: bool = False,
    dynamo: bool = False,
    sample_size: tuple[int, int] | None = None,
    check_shapes: Sequence[tuple[int, int, int]] = (),
) -> ExportReport:
    """Export and verify; ``check_shapes`` are (B, H, W) to compare ONNX Runtime with PyTorch at.

    ``codec`` defaults to the one ``cfg`` defines. ``static`` fixes the input to (1, 3, S, S) with S the
    codec's letterbox (or input size) and records that the codec letterboxes.
    """
    import onnx
    import torch

    from hhrnet.export.opsets import unsupported_ops
    from hhrnet.io import atomic_write_bytes

    artifact = make_artifact(cfg, codec or resolve_codec(cfg), graph, static)
    model = model.eval()
    module = build_graph(model, artifact.codec, graph).eval()
    if artifact.static_hw is not None:
        h, w = artifact.static_hw
    else:
        h, w = sample_size or (min(artifact.codec.input_size, 256),) * 2
    x = torch.zeros(1, 3, h, w)
    kind = graph_kind(graph)
    names = list(kind.outputs)
    axes: dict[str, dict[int, str]] | None = None
    if artifact.static_hw is None:
        axes = {"image": {0: "batch", 2: "height", 3: "width"}}
        for n in names:
            axes[n] = {0: "batch"} | ({2: "h", 3: "w"} if n in ("heatmaps", "tags") else {})
        if not kind.aggregates:  # the network's two stages: 1/4 and 1/2 of the input
            axes["out0"] = {0: "batch", 2: "h4", 3: "w4"}
            axes["out1"] = {0: "batch", 2: "h2", 3: "w2"}
    buf = io.BytesIO()
    with torch.no_grad():
        if dynamo:
            dims = (
                None
                if axes is None
                else (
                    {
                        0: torch.export.Dim("batch", min=1, max=64),
                        2: torch.export.Dim("height", min=1, max=64) * 32,
                        3: torch.export.Dim("width", min=1, max=64) * 32,
                    },
                )
            )
            program = torch.onnx.export(
                module,
                (x,),
                dynamo=True,
                opset_version=opset,
                input_names=["image"],
                output_names=names,
                dynamic_shapes=dims,
            )
            assert program is not None
            proto = program.model_proto
        else:
            with warnings.catch_warnings():
                # The tracer's warnings are about shape checks on static channel counts (always true), and the
                # TorchScript exporter is chosen on purpose (see ``dynamo``): neither is news to the user.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
                warnings.filterwarnings("ignore", ".*legacy TorchScript-based ONNX export", DeprecationWarning)
                torch.onnx.export(
                    module,
                    (x,),
                    buf,  # type: ignore[arg-type]  # a file object is accepted
                    dynamo=False,
                    opset_version=opset,
                    input_names=["image"],
                    output_names=names,
                    dynamic_axes=axes,
                    do_constant_folding=True,
                )
            proto = onnx.load_from_string(buf.getvalue())
    write_contract(proto, artifact)
    onnx.checker.check_model(proto, full_check=True)
    ops = sorted({n.op_type for n in proto.graph.node})
    bad = unsupported_ops(ops)
    if bad:
        raise BackendError(f"the {graph} graph uses ops TensorRT's ONNX parser does not support: {', '.join(bad)}")
    out = Path(path)
    atomic_write_bytes(out, proto.SerializeToString())
    report = ExportReport(out, graph, opset, ops, len(proto.graph.node), artifact)
    if check_shapes:
        if artifact.static_hw is not None:
            check_shapes = [(1, h, w)]
        report.max_abs_error = compare_with_torch(out, module, check_shapes, names)
    return report


def write_contract(proto: Any, artifact: Artifact) -> None:
    """Replace the hhrnet metadata entries of an ONNX ModelProto with ``artifact``'s."""
    meta = artifact.metadata()
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    for k, v in [*kept, *meta.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v


def load_onnx(path: str | Path, external_data: bool = False) -> Any:
    """The ONNX ModelProto at ``path`` (weights stored beside it loaded when ``external_data``); BackendError
    naming the file when it is not ONNX."""
    import onnx

    p = Path(path)
    try:
        return onnx.load(str(p), load_external_data=external_data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise BackendError(f"cannot read {p} as ONNX: {str(exc).splitlines()[0] if str(exc) else exc}") from None


def model_contract(model: Any, source: str) -> Artifact:
    """The artifact contract in a loaded ONNX ModelProto's metadata."""
    return Artifact.from_metadata({q.key: q.value for q in model.metadata_props}, source)


def read_contract(path: str | Path) -> Artifact:
    """The artifact contract of an ONNX file (onnx package; runtimes read it through ONNX Runtime)."""
    return model_contract(load_onnx(path), str(path))


def compare_with_torch(
    onnx_path: Path, module: Any, shapes: Sequence[tuple[int, int, int]], names: Sequence[str]
) -> dict[str, float]:
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    errors: dict[str, float] = {}
    for b, h, w in shapes:
        x = rng.standard_normal((b, 3, h, w)).astype(np.float32)
        got = sess.run(None, {"image": x})
        with torch.no_grad():
            ref = module(torch.from_numpy(x))
        for name, a, r in zip(names, got, ref, strict=True):
            if name in ("peak_index", "peak_tags"):
                continue  # TopK orders tied values differently per runtime; the values are compared
            errors[f"{b}x3x{h}x{w}/{name}"] = float(np.abs(a.astype(np.float64) - r.numpy()).max())
    return errors
