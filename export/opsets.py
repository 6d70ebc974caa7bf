"""ONNX operators TensorRT's ONNX parser accepts, for the allowlist check of every exported graph.

Source: onnx-tensorrt ``docs/operators.md`` for TensorRT 10.0 (supports opsets 9 to 20). Listed here are the
operators marked supported there that an hhrnet export can contain (network, aggregation, NMS/top-k and
what the PyTorch exporters emit around them); a graph with anything else fails the check before a
TensorRT build is attempted.
"""

from __future__ import annotations

from collections.abc import Iterable

TENSORRT_VERSION = "10.0"
OPSET_RANGE = (9, 20)

TENSORRT_ONNX_OPS = frozenset(
    {
        "Abs",
        "Add",
        "And",
        "ArgMax",
        "ArgMin",
        "AveragePool",
        "BatchNormalization",
        "Cast",
        "Ceil",
        "Clip",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Conv",
        "ConvTranspose",
        "DepthToSpace",
        "Div",
        "Equal",
        "Erf",
        "Exp",
        "Expand",
        "Flatten",
        "Floor",
        "Gather",
        "GatherElements",
        "GatherND",
        "Gemm",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "Greater",
        "GreaterOrEqual",
        "Identity",
        "If",
        "InstanceNormalization",
        "LeakyRelu",
        "Less",
        "LessOrEqual",
        "Log",
        "MatMul",
        "Max",
        "MaxPool",
        "Mean",
        "Min",
        "Mod",
        "Mul",
        "Neg",
        "Not",
        "Or",
        "Pad",
        "Pow",
        "PRelu",
        "Range",
        "Reciprocal",
        "ReduceMax",
        "ReduceMean",
        "ReduceMin",
        "ReduceSum",
        "Relu",
        "Reshape",
        "Resize",
        "Round",
        "ScatterElements",
        "ScatterND",
        "Shape",
        "Sigmoid",
        "Sign",
        "Size",
        "Slice",
        "Softmax",
        "Split",
        "Sqrt",
        "Squeeze",
        "Sub",
        "Sum",
        "Tanh",
        "Tile",
        "TopK",
        "Transpose",
        "Unsqueeze",
        "Upsample",
        "Where",
    }
)


def unsupported_ops(op_types: Iterable[str]) -> list[str]:
    """The op types TensorRT's parser would reject, sorted."""
    return sorted(set(op_types) - TENSORRT_ONNX_OPS)
