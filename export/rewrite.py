"""Equivalent rewrites of an fp32 ONNX graph that let ONNX Runtime's CPU int8 kernels take more of the network.

ONNX Runtime has no int8 kernel for ``ConvTranspose``: in a quantized graph it dequantizes, runs the fp32
transposed convolution (a GEMM and a col2im: 8.5 % of W32-512's int8 network on the project's CPU) and quantizes
again.
A transposed convolution whose output is ``stride`` times its input (HigherHRNet's deconvolution: kernel 4,
padding 1, stride 2, and the official kernel 2 and 3 variants) is the same sum as a plain convolution with
``stride**2`` times the output channels followed by ``DepthToSpace``: output pixel ``(s*i + a, s*j + b)`` takes
input pixels ``(i + t, j + u)`` through the kernel taps ``(a + p - s*t, b + p - s*u)`` (sub-pixel convolution).
The plain convolution quantizes to ``QLinearConv``; ``DepthToSpace`` only moves values (it stays between the
dequantize and the next quantize: quantized as well, it measured no faster).

The rewrite is exact arithmetic (the same products, summed in another order: fp32 results differ by rounding
only); it keeps the transposed convolution's node name on the new convolution, so precision keep-lists and the
int8 guard's blocks name the same layers before and after.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hhrnet.errors import BackendError


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def subpixel_taps(kernel: int, stride: int, pad: int) -> tuple[int, int, dict[tuple[int, int], int]]:
    """Offsets of a stride-``stride`` transposed convolution as a plain convolution, along one axis.

    Output ``stride*q + a`` sums input ``q + t`` through kernel tap ``k = a + pad - stride*t`` for every phase
    ``a`` and every ``t`` with ``0 <= k < kernel``. Returns ``(t_min, t_max, {(a, t): k})``; the plain convolution
    has ``t_max - t_min + 1`` taps, padding ``-t_min`` before and ``t_max`` after.
    """
    taps: dict[tuple[int, int], int] = {}
    for a in range(stride):
        for k in range(kernel):
            if (a + pad - k) % stride == 0:
                taps[(a, (a + pad - k) // stride)] = k
    offsets = [t for _, t in taps]
    return min(offsets), max(offsets), taps


def _rewritable(node: Any, weight: np.ndarray | None) -> tuple[int, int] | None:
    """(stride, pad) of a ConvTranspose the rewrite handles, else None."""
    a = _attrs(node)
    if weight is None or weight.ndim != 4 or a.get("group", 1) != 1 or "output_shape" in a:
        return None
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    kh, kw = weight.shape[2:]
    strides = list(a.get("strides", [1, 1]))
    pads = list(a.get("pads", [0, 0, 0, 0]))
    out_pad = list(a.get("output_padding", [0, 0]))
    if list(a.get("dilations", [1, 1])) != [1, 1] or kh != kw or strides[0] != strides[1] or strides[0] < 2:
        return None
    s, p = int(strides[0]), int(pads[0])
    if pads != [p] * 4 or out_pad[0] != out_pad[1]:
        return None
    if kh - 2 * p + out_pad[0] != s:  # output = s * input: what DepthToSpace gives
        return None
    t_min, t_max, _ = subpixel_taps(kh, s, p)
    if t_min > 0 or t_max < 0:  # would need a crop, not padding
        return None
    return s, p


def subpixel_weight(weight: np.ndarray, stride: int, pad: int) -> tuple[np.ndarray, int, int]:
    """A ConvTranspose weight ``(C_in, C_out, K, K)`` as the weight ``(C_out * s * s, C_in, T, T)`` of the plain
    convolution whose output, through ``DepthToSpace(s, CRD)``, is the transposed convolution's; with
    ``(pad_begin, pad_end)`` of that convolution."""
    c_in, c_out, kernel, _ = weight.shape
    t_min, t_max, taps = subpixel_taps(kernel, stride, pad)
    size = t_max - t_min + 1
    out = np.zeros((c_out, stride, stride, c_in, size, size), dtype=weight.dtype)
    for (a, t), ky in taps.items():
        for (b, u), kx in taps.items():
            out[:, a, b, :, t - t_min, u - t_min] = weight[:, :, ky, kx].T
    return out.reshape(c_out * stride * stride, c_in, size, size), -t_min, t_max


def constants(graph: Any) -> Callable[[str], np.ndarray | None]:
    """A lookup: tensor name -> its value if it is constant (an initializer, a ``Constant`` node, or ``Identity``
    of a constant: the torch exporter writes equal parameters once and the others as Identity of it), else None.
    Only the tensors asked for are converted to NumPy."""
    from onnx import numpy_helper

    protos = {i.name: i for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            protos[n.output[0]] = n.attribute[0].t
        elif n.op_type == "Identity" and n.input[0] in protos:
            protos[n.output[0]] = protos[n.input[0]]

    def value(name: str) -> np.ndarray | None:
        proto = protos.get(name)
        return None if proto is None else numpy_helper.to_array(proto)

    return value


def deconv_as_conv(model: Any) -> tuple[Any, list[str]]:
    """``model`` (a copy) with each rewritable ConvTranspose as Conv + DepthToSpace; (model, rewritten names).

    The Conv keeps the ConvTranspose's name (and the bias, repeated per output phase); ``DepthToSpace`` is named
    ``<name>/depth_to_space``. The batch norm after HigherHRNet's deconvolution is left where it is: folded into
    the sub-pixel weights, the int8 file lost 1.1 AP points on the trained tiny model's held-out images (0.38
    unfolded, benchmarks/RESULTS.md). Transposed convolutions the rewrite does not handle (groups, dilation, an
    output that is not ``stride`` times the input) are left as they are.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    constant = constants(graph)
    nodes: list[Any] = []
    done: list[str] = []
    for node in graph.node:
        weight = constant(node.input[1]) if node.op_type == "ConvTranspose" and len(node.input) > 1 else None
        spec = _rewritable(node, weight) if node.op_type == "ConvTranspose" else None
        if spec is None or weight is None:
            nodes.append(node)
            continue
        s, p = spec
        if not node.name:
            raise BackendError("a ConvTranspose node has no name; export the model with hhrnet export")
        bias: np.ndarray | None = None
        if len(node.input) > 2 and node.input[2]:
            bias = constant(node.input[2])
            if bias is None:
                raise BackendError(f"{node.name}: the ConvTranspose bias is not a constant")
        w, before, after = subpixel_weight(weight, s, p)
        inputs = [node.input[0], f"{node.name}/subpixel_weight"]
        new_inits = [numpy_helper.from_array(w, inputs[1])]
        if bias is not None:
            inputs.append(f"{node.name}/subpixel_bias")
            new_inits.append(numpy_helper.from_array(np.repeat(bias, s * s), inputs[2]))
        graph.initializer.extend(new_inits)
        size = w.shape[2]
        mid = f"{node.name}/subpixel"
        nodes.append(
            helper.make_node(
                "Conv",
                inputs,
                [mid],
                name=node.name,
                kernel_shape=[size, size],
                pads=[before, before, after, after],
                strides=[1, 1],
            )
        )
        nodes.append(
            helper.make_node(
                "DepthToSpace", [mid], list(node.output), name=f"{node.name}/depth_to_space", blocksize=s, mode="CRD"
            )
        )
        done.append(node.name)
    if done:
        del graph.node[:]
        graph.node.extend(nodes)
        used = {name for n in graph.node for name in n.input}
        kept = [i for i in graph.initializer if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return model, done
