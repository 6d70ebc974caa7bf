"""ONNX export with dynamic batch/height/width, metadata, TensorRT op allowlist and ONNX Runtime parity.

``export_onnx(model, cfg, path, variant=...)`` writes the file atomically, runs ``onnx.checker`` (full
check), asserts every op is one TensorRT's parser supports, and compares ONNX Runtime with PyTorch at
several shapes (max abs error per output in the report).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hhrnet.errors import BackendError

Variant = Literal["raw", "aggregate", "peaks"]
OUTPUT_NAMES: dict[str, list[str]] = {
    "raw": ["out0", "out1"],
    "aggregate": ["heatmaps", "tags"],
    "peaks": ["heatmaps", "tags", "peak_vals", "peak_index", "peak_tags"],
}


@dataclass
class ExportReport:
    path: Path
    variant: str
    opset: int
    op_types: list[str]
    nodes: int
    max_abs_error: dict[str, float] = field(default_factory=dict)  # "BxCxHxW/output" -> error
    metadata: dict[str, str] = field(default_factory=dict)


def build_graph(model: Any, cfg: Any, variant: Variant, flip: bool = True) -> Any:
    from hhrnet.export.graph import AggregateGraph, PeaksGraph

    if variant == "raw":
        return model
    with_hm = tuple(a and b for a, b in zip(cfg.loss.with_heatmaps_loss, cfg.test.with_heatmaps, strict=True))
    with_ae = tuple(a and b for a, b in zip(cfg.loss.with_ae_loss, cfg.test.with_ae, strict=True))
    agg = AggregateGraph(
        model, num_joints=cfg.model.num_joints, flip_index=cfg.data.flip_index, flip=flip,
        with_heatmaps=with_hm, with_ae=with_ae, project=cfg.test.project2image,
    )  # fmt: skip
    if variant == "aggregate":
        return agg
    if variant == "peaks":
        return PeaksGraph(agg, top_k=cfg.data.max_num_people, nms_kernel=cfg.test.nms_kernel)
    raise BackendError(f"unknown export variant {variant!r}; expected raw, aggregate or peaks")


def metadata(cfg: Any, variant: str, flip: bool) -> dict[str, str]:
    import hhrnet

    t = 2 if flip else 1
    return {
        "hhrnet_version": hhrnet.__version__,
        "variant": variant,
        "num_joints": str(cfg.model.num_joints),
        "flip_index": json.dumps(list(cfg.data.flip_index)),
        "flip_in_graph": str(flip and variant != "raw").lower(),
        "tag_dims": str(t if variant != "raw" else 1),
        "input_mean": json.dumps([0.485, 0.456, 0.406]),
        "input_std": json.dumps([0.229, 0.224, 0.225]),
        "input_size": str(cfg.data.input_size),
        "peaks_capacity": str(cfg.data.max_num_people),
        "config": json.dumps(cfg.to_dict()),
    }


def export_onnx(
    model: Any,
    cfg: Any,
    path: str | Path,
    *,
    variant: Variant = "raw",
    opset: int = 17,
    dynamic: bool = True,
    dynamo: bool = False,
    flip: bool = True,
    sample_size: tuple[int, int] | None = None,
    check_shapes: Sequence[tuple[int, int, int]] = (),
) -> ExportReport:
    """Export and verify; ``check_shapes`` are (B, H, W) to compare ONNX Runtime with PyTorch at."""
    import onnx
    import torch

    from hhrnet.export.opsets import unsupported_ops
    from hhrnet.io import atomic_write_bytes

    model = model.eval()
    graph = build_graph(model, cfg, variant, flip).eval()
    h, w = sample_size or (min(cfg.data.input_size, 256),) * 2
    x = torch.zeros(1, 3, h, w)
    names = OUTPUT_NAMES[variant]
    axes: dict[str, dict[int, str]] | None = None
    if dynamic:
        axes = {"image": {0: "batch", 2: "height", 3: "width"}}
        for n in names:
            axes[n] = {0: "batch"} | ({2: "h", 3: "w"} if n in ("heatmaps", "tags") else {})
        if variant == "raw":
            axes["out0"] = {0: "batch", 2: "h4", 3: "w4"}
            axes["out1"] = {0: "batch", 2: "h2", 3: "w2"}
    buf = io.BytesIO()
    with torch.no_grad():
        if dynamo:
            program = torch.onnx.export(graph, (x,), dynamo=True, opset_version=opset, input_names=["image"],
                                        output_names=names, dynamic_shapes=None if not dynamic else
                                        ({0: torch.export.Dim("batch", min=1, max=64),
                                          2: torch.export.Dim("height", min=1, max=64) * 32,
                                          3: torch.export.Dim("width", min=1, max=64) * 32},))  # fmt: skip
            assert program is not None
            proto = program.model_proto
        else:
            torch.onnx.export(
                graph, (x,), buf,  # type: ignore[arg-type]  # a file object is accepted
                dynamo=False, opset_version=opset, input_names=["image"], output_names=names,
                dynamic_axes=axes, do_constant_folding=True,
            )  # fmt: skip
            proto = onnx.load_from_string(buf.getvalue())
    meta = metadata(cfg, variant, flip)
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto, full_check=True)
    ops = sorted({n.op_type for n in proto.graph.node})
    bad = unsupported_ops(ops)
    if bad:
        raise BackendError(f"the {variant} graph uses ops TensorRT's ONNX parser does not support: {', '.join(bad)}")
    out = Path(path)
    atomic_write_bytes(out, proto.SerializeToString())
    report = ExportReport(out, variant, opset, ops, len(proto.graph.node), metadata=meta)
    if check_shapes:
        report.max_abs_error = compare_with_torch(out, graph, check_shapes, names)
    return report


def compare_with_torch(
    onnx_path: Path, graph: Any, shapes: Sequence[tuple[int, int, int]], names: Sequence[str]
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
            ref = graph(torch.from_numpy(x))
        for name, a, r in zip(names, got, ref, strict=True):
            if name in ("peak_index", "peak_tags"):
                continue  # TopK orders tied values differently per runtime; the values are compared
            errors[f"{b}x3x{h}x{w}/{name}"] = float(np.abs(a.astype(np.float64) - r.numpy()).max())
    return errors


def read_metadata(path: str | Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}
