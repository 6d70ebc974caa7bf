"""The network: official state_dict layout, golden forward parity, sizes, export/compile/precision modes."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from golden_weights import fill_formula_weights

from hhrnet.complexity import count_macs, count_parameters
from hhrnet.config import apply_overrides, preset
from hhrnet.errors import InputError
from hhrnet.model import HigherHRNet, build_model


def _spec(golden_dir: Path, name: str) -> list[tuple[str, str]]:
    with gzip.open(golden_dir / f"state_dict_spec_{name}.tsv.gz", "rt") as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    return [(r[0], r[1]) for r in rows]


@pytest.mark.parametrize("name", ["coco_w32_512", "coco_w48_640", "crowdpose_w32_512"])
def test_state_dict_keys_order_and_shapes_match_official(golden_dir: Path, name: str) -> None:
    model = build_model(preset(name))
    state = model.state_dict()
    spec = _spec(golden_dir, name)
    assert len(state) == len(spec) == 1810
    assert list(state) == [k for k, _ in spec]
    for key, shape in spec:
        assert ("x".join(map(str, state[key].shape)) or "scalar") == shape, key


@pytest.mark.parametrize(("name", "seed"), [("coco_w32_512", 7), ("crowdpose_w32_512", 11)])
def test_forward_matches_golden(golden_dir: Path, name: str, seed: int) -> None:
    """The official forward at 256x384: every 101st output value (the compact golden) to 1e-4 of the range;
    where the float32 bytes of a whole output also hash equal, the forward is bit-identical on this CPU."""
    model = build_model(preset(name)).eval()
    fill_formula_weights(model, seed)
    golden = np.load(golden_dir / f"forward_formula_{name}_seed{seed}.npz")
    x = golden["input_256x384"]
    assert hashlib.sha256(x.tobytes()).hexdigest() == str(golden["input_256x384_sha256"])
    with torch.no_grad():
        outputs = model(torch.from_numpy(x))
    for i, out in enumerate(outputs):
        got = out.numpy()
        assert got.shape == tuple(golden[f"output{i}_256x384_shape"])
        ref = golden[f"output{i}_256x384_every101"]
        sample = got.ravel()[::101]
        assert sample.shape == ref.shape
        rel = np.abs(sample - ref).max() / np.abs(ref).max()
        assert rel <= 1e-4, (i, rel)


@pytest.mark.parametrize(
    ("name", "params", "gmacs"),
    [
        ("coco_w32_512", 28_645_331, 47.86),
        ("coco_w32_640", 28_645_331, 74.79),
        ("coco_w48_640", 63_827_139, 154.31),
        ("crowdpose_w32_512", 28_641_962, None),
    ],
)
def test_parameters_and_macs_match_official(name: str, params: int, gmacs: float | None) -> None:
    cfg = preset(name)
    model = build_model(cfg)
    assert count_parameters(model) == params
    if gmacs is not None:
        size = cfg.data.input_size
        assert round(count_macs(model, size, size) / 1e9, 2) == gmacs


def test_output_shapes_and_channels_for_both_datasets() -> None:
    for name, joints in (("tiny", 17), ("crowdpose_w32_512", 14)):
        cfg = preset(name)
        model = build_model(cfg).eval()
        if name != "tiny":
            continue  # the W32 shapes are covered by the golden test; keep this one cheap
        with torch.no_grad():
            out0, out1 = model(torch.zeros(2, 3, 64, 96))
        assert out0.shape == (2, 3 * joints, 16, 24)  # J heatmaps + 2 groups of J tags (tag_dim=2)
        assert out1.shape == (2, joints, 32, 48)
    crowd = build_model(preset("crowdpose_w32_512"))
    assert crowd.final_layers[0].out_channels == 28
    assert crowd.final_layers[1].out_channels == 14
    vec = build_model(apply_overrides(preset("tiny"), ["model.tag_dim=3"]))  # J heatmaps + 3 groups of J tags
    assert vec.final_layers[0].out_channels == 17 * 4 and vec.final_layers[1].out_channels == 17


def test_tag_position_adds_a_linear_function_of_the_position_to_the_tags_only() -> None:
    """``model.tag_position`` (not official): each tag channel gains ``a * x + b * y`` with (x, y) the pixel in
    stride-4 map pixels and (a, b) learned per channel; heatmaps, the other weights and an official model's
    state_dict are untouched."""
    official_tags = apply_overrides(preset("tiny"), ["model.tag_position=false", "model.tag_dim=1"])
    plain = build_model(official_tags).eval()
    cfg = apply_overrides(official_tags, ["model.tag_position=true"])
    model = build_model(cfg).eval()
    assert "tag_position.0.weight" not in plain.state_dict()
    extra = set(model.state_dict()) - set(plain.state_dict())
    assert extra == {"tag_position.0.weight"}  # only the stage with tags; the 1/2 stage carries none
    model.load_state_dict(plain.state_dict(), strict=False)
    weight = torch.zeros(17, 2, 1, 1)
    weight[:, 0] = torch.linspace(-1.0, 1.0, 17).view(17, 1, 1)  # a per channel
    weight[:, 1] = 0.25  # b
    with torch.no_grad():
        model.tag_position[0].weight.copy_(weight)
        x = torch.randn(1, 3, 64, 96)
        ref0, ref1 = plain(x)
        got0, got1 = model(x)
    torch.testing.assert_close(got0[:, :17], ref0[:, :17], rtol=0, atol=0)  # heatmaps
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(24.0), indexing="ij")
    expected = weight[:, 0].view(1, 17, 1, 1) * xx + weight[:, 1].view(1, 17, 1, 1) * yy
    torch.testing.assert_close(got0[:, 17:] - ref0[:, 17:], expected, rtol=1e-5, atol=1e-5)
    assert not torch.equal(got1, ref1)  # the 1/2 stage reads the first stage's outputs (CAT_OUTPUT)
    two = build_model(apply_overrides(cfg, ["model.tag_dim=2"]))
    assert two.tag_position is not None and two.tag_position[0].out_channels == 34


def test_input_not_multiple_of_32_is_a_clear_error() -> None:
    model = build_model(preset("tiny")).eval()
    with pytest.raises(InputError, match="multiples of 32.*64x80"):
        model(torch.zeros(1, 3, 64, 80))
    with pytest.raises(InputError, match=r"\(B, 3, H, W\)"):
        model(torch.zeros(1, 1, 64, 64))


def test_official_init() -> None:
    model = build_model(preset("tiny"))
    w = model.final_layers[0].weight
    assert abs(float(w.std()) - 0.001) < 0.0005
    assert float(model.final_layers[0].bias.abs().max()) == 0.0
    assert float(model.bn1.weight.min()) == 1.0


def _tiny_eval() -> tuple[HigherHRNet, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(preset("tiny")).eval()
    fill_formula_weights(model, 3)
    return model, torch.randn(1, 3, 64, 96)


def test_trace_and_onnx_dynamic_shapes(tmp_path: Path) -> None:
    import onnxruntime as ort

    model, x = _tiny_eval()
    traced = torch.jit.trace(model, x)
    x2 = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        for a, b in zip(traced(x2), model(x2), strict=True):
            torch.testing.assert_close(a, b)
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(
        model,
        (x,),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
        output_names=["out0", "out1"],
        dynamic_axes={
            "image": {0: "b", 2: "h", 3: "w"},
            "out0": {0: "b", 2: "h4", 3: "w4"},
            "out1": {0: "b", 2: "h2", 3: "w2"},
        },
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x2.numpy()})
    with torch.no_grad():
        ref = model(x2)
    for a, b in zip(got, ref, strict=True):
        assert a.shape == tuple(b.shape)
        assert np.abs(a - b.numpy()).max() <= 1e-4 * max(1.0, float(b.abs().max()))


def test_channels_last_and_autocast_match() -> None:
    model, x = _tiny_eval()
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        for a, b in zip(cl, ref, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    for a, b in zip(low, ref, strict=True):
        assert torch.isfinite(a).all()
        assert float((a.float() - b).abs().max()) < 0.05 * float(b.abs().max()) + 1e-3


def test_torch_compile_matches_eager() -> None:
    model, x = _tiny_eval()
    compiled = torch.compile(model)
    with torch.no_grad():
        for a, b in zip(compiled(x), model(x), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
