"""Checkpoint loading in every official layout, safety (weights_only), clear mismatch errors, atomic saves."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from hhrnet import checkpoint as ck
from hhrnet.config import preset
from hhrnet.errors import CheckpointError
from hhrnet.model import build_model


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    model = build_model(preset("tiny"))
    for p in model.parameters():
        p.data.normal_()
    return model.state_dict()


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k].float(), b[k].float()) for k in a)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,  # official flat state_dict
        lambda s: {f"1.{k}": v.half() if v.is_floating_point() else v for k, v in s.items()},  # fp16-trained
        lambda s: {f"module.{k}": v for k, v in s.items()},  # DDP
        lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}, "epoch": 3},  # checkpoint.pth.tar
        lambda s: {"model": s, "format": "hhrnet-checkpoint"},
    ],
    ids=["flat", "fp16-prefix", "ddp", "state_dict-wrapper", "ours"],
)
def test_layouts_load_strict(tmp_path: Path, tiny_state: dict[str, torch.Tensor], wrap: object) -> None:
    path = tmp_path / "w.pth"
    torch.save(wrap(tiny_state), path)  # type: ignore[operator]
    model = build_model(preset("tiny"))
    ck.load_weights(model, path, strict=True)
    loaded = model.state_dict()
    if "fp16" in str(wrap):
        return
    for k in tiny_state:
        if tiny_state[k].is_floating_point():
            # fp16 round-trip loses bits; the others are exact
            assert torch.allclose(loaded[k], tiny_state[k], rtol=1e-3, atol=1e-3), k


def test_fp16_prefix_round_trip_exact_for_half_representable(tmp_path: Path) -> None:
    model = build_model(preset("tiny"))
    state = {k: (v.half().float() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save({f"1.{k}": (v.half() if v.is_floating_point() else v) for k, v in state.items()}, tmp_path / "h.pth")
    fresh = build_model(preset("tiny"))
    ck.load_weights(fresh, tmp_path / "h.pth")
    assert _equal(fresh.state_dict(), state)
    assert all(v.dtype != torch.float16 for v in fresh.state_dict().values())


def test_our_checkpoint_round_trip_builds_model_from_embedded_config(tmp_path: Path) -> None:
    cfg = preset("tiny")
    model = build_model(cfg)
    path = ck.save_checkpoint(tmp_path / "ours.pth", ck.make_payload(model, cfg, epoch=4))
    loaded, cfg2 = ck.load_model(path)
    assert cfg2 == cfg
    assert _equal(loaded.state_dict(), model.state_dict())
    _, meta = ck.read_checkpoint(path)
    assert meta["epoch"] == 4 and meta["format"] == ck.FORMAT
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_wrong_dataset_names_the_problem(tmp_path: Path) -> None:
    crowd = preset("tiny")
    from hhrnet.config import apply_overrides

    crowd = apply_overrides(crowd, ["model.num_joints=14", "data.num_joints=14", "data.dataset=crowdpose"])
    torch.save(build_model(crowd).state_dict(), tmp_path / "crowd.pth")
    with pytest.raises(CheckpointError, match=r"predicts 14 joints but the model has 17.*shape mismatch.*final_layers"):
        ck.load_weights(build_model(preset("tiny")), tmp_path / "crowd.pth")


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path, tiny_state: dict[str, torch.Tensor]) -> None:
    state = dict(tiny_state)
    state.pop("conv1.weight")
    state["extra.head.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"missing keys: conv1\.weight.*unexpected keys: extra\.head\.weight"):
        ck.load_weights(build_model(preset("tiny")), tmp_path / "bad.pth")


def test_corrupt_missing_and_non_checkpoint_files(tmp_path: Path, tiny_state: dict[str, torch.Tensor]) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        ck.read_checkpoint(tmp_path / "nope.pth")
    good = tmp_path / "good.pth"
    torch.save(tiny_state, good)
    torn = tmp_path / "torn.pth"
    torn.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    with pytest.raises(CheckpointError, match="torn.pth.*corrupt"):
        ck.read_checkpoint(torn)
    text = tmp_path / "text.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="text.pth is not a PyTorch checkpoint"):
        ck.read_checkpoint(text)
    noise = tmp_path / "noise.pth"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint") as info:
        ck.read_checkpoint(noise)
    assert "weights_only" not in str(info.value)  # never repeat torch's advice to turn the guard off
    torch.save({"epoch": 1, "lr": torch.tensor(0.1)}, tmp_path / "noweights.pth")
    with pytest.raises(CheckpointError, match="no model weights"):
        ck.read_checkpoint(tmp_path / "noweights.pth")


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch pwned",))


def test_pickled_code_is_never_executed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": {}, "payload": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"refused: loading it would run code.*GLOBAL posix.system") as info:
        ck.read_checkpoint(tmp_path / "evil.pth")
    assert "weights_only" not in str(info.value)
    assert not (tmp_path / "pwned").exists()


def test_imagenet_backbone_with_pretrained_layers(tmp_path: Path) -> None:
    cfg = preset("tiny")
    src = build_model(cfg)
    for p in src.parameters():
        p.data.fill_(0.5)
    # ImageNet HRNet layout: backbone keys + classification head keys, including `final_layer.*`
    state = {k: v for k, v in src.state_dict().items() if not k.startswith(("final_layers", "deconv_layers"))}
    state["final_layer.0.weight"] = torch.ones(2048, 1024, 1, 1)
    state["classifier.weight"] = torch.ones(1000, 2048)
    state["incre_modules.0.0.conv1.weight"] = torch.ones(32, 32, 1, 1)
    torch.save(state, tmp_path / "hrnet_w32-imagenet.pth")

    every = build_model(cfg)
    loaded = ck.load_pretrained(every, tmp_path / "hrnet_w32-imagenet.pth", ("*",))
    assert "conv1.weight" in loaded and "stage4.0.branches.0.0.conv1.weight" in loaded
    assert not any(k.startswith(("final_layer", "classifier", "incre")) for k in loaded)
    assert float(every.conv1.weight.mean()) == 0.5
    assert float(every.final_layers[0].weight.abs().max()) < 0.05  # heads keep their init

    some = build_model(cfg)
    loaded = ck.load_pretrained(some, tmp_path / "hrnet_w32-imagenet.pth", ("conv1", "bn1", "layer1"))
    assert {k.split(".")[0] for k in loaded} == {"conv1", "bn1", "layer1"}
    assert float(some.conv2.weight.abs().max()) < 0.05
