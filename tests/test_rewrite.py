"""The CPU int8 form's graph rewrite: a transposed convolution as a sub-pixel convolution + DepthToSpace
(export/rewrite.py), equal to ONNX Runtime's own ConvTranspose, and what it leaves alone."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hhrnet import samples
from hhrnet.export.rewrite import deconv_as_conv, subpixel_taps

COCO = samples.images("coco")[0].parent


def _onnx(module: nn.Module, x: torch.Tensor):  # onnx ModelProto, every node named
    import onnx

    buf = io.BytesIO()
    axes = {"x": {0: "b", 2: "h", 3: "w"}}
    torch.onnx.export(module.eval(), (x,), buf, input_names=["x"], output_names=["y"], dynamic_axes=axes, dynamo=False)
    model = onnx.load_from_string(buf.getvalue())
    for i, node in enumerate(model.graph.node):
        node.name = node.name or f"node{i}"
    return model


def _run(model, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_subpixel_taps_of_higherhrnets_deconvolution() -> None:
    # kernel 4, stride 2, padding 1: even outputs take input q (tap 1) and q-1 (tap 3), odd ones q+1 (0) and q (2)
    assert subpixel_taps(4, 2, 1) == (-1, 1, {(0, 0): 1, (0, -1): 3, (1, 1): 0, (1, 0): 2})
    assert subpixel_taps(2, 2, 0) == (0, 0, {(0, 0): 0, (1, 0): 1})


@pytest.mark.parametrize(("kernel", "padding", "output_padding"), [(4, 1, 0), (3, 1, 1), (2, 0, 0)])
def test_subpixel_convolution_equals_the_transposed_one(kernel: int, padding: int, output_padding: int) -> None:
    torch.manual_seed(kernel)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ConvTranspose2d(6, 5, kernel, 2, padding, output_padding))
    model = _onnx(net, torch.randn(1, 3, 8, 8))
    rewritten, names = deconv_as_conv(model)
    ops = [n.op_type for n in rewritten.graph.node]
    assert names == [n.name for n in model.graph.node if n.op_type == "ConvTranspose"] and len(names) == 1
    assert "ConvTranspose" not in ops and ops[-2:] == ["Conv", "DepthToSpace"]
    assert rewritten.graph.node[len(ops) - 2].name == names[0]  # the convolution keeps the layer's name
    rng = np.random.default_rng(kernel)
    for shape in ((1, 3, 7, 9), (2, 3, 12, 5)):  # odd sizes, a batch: the same graph for every shape
        x = rng.standard_normal(shape).astype(np.float32)
        want, got = _run(model, x), _run(rewritten, x)
        assert got.shape == want.shape == (shape[0], 5, 2 * shape[2], 2 * shape[3])
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())


def test_a_weight_written_as_identity_of_another_constant_is_read() -> None:
    """The torch exporter writes equal parameters once and the others as ``Identity`` of it."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ConvTranspose2d(4, 4, 4, 2, 1), nn.ConvTranspose2d(4, 4, 4, 2, 1))
    with torch.no_grad():
        net[2].weight.copy_(net[1].weight)
        net[2].bias.copy_(net[1].bias)
    model = _onnx(net, torch.randn(1, 3, 8, 8))
    assert "Identity" in [n.op_type for n in model.graph.node]
    rewritten, names = deconv_as_conv(model)
    assert len(names) == 2 and "ConvTranspose" not in [n.op_type for n in rewritten.graph.node]
    x = np.random.default_rng(2).standard_normal((1, 3, 6, 10)).astype(np.float32)
    want = _run(model, x)
    np.testing.assert_allclose(_run(rewritten, x), want, rtol=0, atol=2e-6 * np.abs(want).max())


@pytest.mark.parametrize(
    "layer",
    [
        nn.ConvTranspose2d(6, 4, 4, 2, 1, groups=2),  # grouped
        nn.ConvTranspose2d(6, 4, 4, 2, 1, dilation=2),  # dilated
        nn.ConvTranspose2d(6, 4, 3, 2, 1),  # output 2h - 1: not a whole sub-pixel grid
        nn.ConvTranspose2d(6, 4, 3, 1, 1),  # stride 1
    ],
)
def test_transposed_convolutions_it_does_not_handle_are_left_alone(layer: nn.Module) -> None:
    model = _onnx(nn.Sequential(nn.Conv2d(3, 6, 1), layer), torch.randn(1, 3, 8, 8))
    rewritten, names = deconv_as_conv(model)
    assert names == [] and rewritten.SerializeToString() == model.SerializeToString()


@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_the_cpu_int8_form_quantizes_the_deconvolution(fp32: dict[str, Path], tmp_path: Path, target: str) -> None:
    """ONNX Runtime has no int8 ConvTranspose: the CPU form carries the sub-pixel convolution, quantized like every
    other convolution; the TensorRT form keeps the ConvTranspose (TensorRT runs it in int8)."""
    import onnx

    from hhrnet.export.onnx import read_contract
    from hhrnet.export.precision import convert, node_groups

    rep = convert(fp32["aggregate"], tmp_path / "q.onnx", "int8", calib_images=COCO, calib_count=2, target=target,
                  guarded=False, keep=["none"])  # fmt: skip
    model = onnx.load(str(rep.path))
    (name,) = node_groups(onnx.load(str(fp32["aggregate"])).graph)["deconv"]
    producers = {o: n for n in model.graph.node for o in n.output}
    (node,) = [n for n in model.graph.node if n.name == name]  # the layer keeps its name in either form
    assert producers[node.input[1]].op_type == "DequantizeLinear"  # int8 weights, either form
    extra = read_contract(rep.path).extra
    if target == "cpu":
        assert node.op_type == "Conv" and "ConvTranspose" not in rep.op_types and "DepthToSpace" in rep.op_types
        assert extra["subpixel_deconv"] == [node.name]
    else:
        assert node.op_type == "ConvTranspose" and "DepthToSpace" not in rep.op_types
        assert "subpixel_deconv" not in extra
    # the group names the layer after the rewrite too, so a keep list means the same layer in both forms
    kept = convert(fp32["aggregate"], tmp_path / "k.onnx", "int8", calib_images=COCO, calib_count=2, target=target,
                   guarded=False, keep=["deconv"])  # fmt: skip
    assert kept.kept == [node.name]
