"""Config: presets, official YAML loading with official defaults, unknown keys, overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import EXPERIMENTS

from hhrnet import config as C
from hhrnet.datasets import CROWDPOSE
from hhrnet.errors import ConfigError

YAMLS = sorted(EXPERIMENTS.glob("*/higher_hrnet/*.yaml"))


def test_all_eight_official_yamls_are_present_and_load() -> None:
    assert len(YAMLS) == 8
    for path in YAMLS:
        cfg = C.load_yaml(path)
        assert cfg.test.detection_threshold == 0.1  # set in every yaml (default.py says 0.2)
        assert cfg.loss.ae_loss_type == "exp"  # yaml value (default.py says max)
        assert cfg.data.max_scale == 1.5


@pytest.mark.parametrize(
    ("rel", "preset"),
    [
        ("coco/higher_hrnet/w32_512_adam_lr1e-3.yaml", "coco_w32_512"),
        ("coco/higher_hrnet/w32_640_adam_lr1e-3.yaml", "coco_w32_640"),
        ("coco/higher_hrnet/w48_640_adam_lr1e-3.yaml", "coco_w48_640"),
        ("crowd_pose/higher_hrnet/w32_512_adam_lr1e-3.yaml", "crowdpose_w32_512"),
        ("crowd_pose/higher_hrnet/w32_640_adam_lr1e-3.yaml", "crowdpose_w32_640"),
        ("crowd_pose/higher_hrnet/w48_640_adam_lr1e-3.yaml", "crowdpose_w48_640"),
    ],
)
def test_official_yaml_equals_preset(rel: str, preset: str) -> None:
    from_yaml = C.load_yaml(EXPERIMENTS / rel)
    ref = C.preset(preset)
    assert from_yaml.model == ref.model
    assert from_yaml.data == ref.data
    assert from_yaml.loss == ref.loss
    assert from_yaml.test == ref.test
    # only the output directory name differs ('output' in the yaml, 'runs' for us)
    assert from_yaml.train == dataclasses.replace(ref.train, output_dir="output")


def test_yaml_specific_values() -> None:
    coco_init = C.load_yaml(EXPERIMENTS / "crowd_pose/higher_hrnet/w32_512_adam_lr1e-3_coco.yaml")
    assert coco_init.model.pretrained_layers[0] == "conv1"
    assert "final_layers" not in coco_init.model.pretrained_layers
    assert coco_init.model.pretrained.endswith("pose_higher_hrnet_w32_512.pth")
    assert C.load_yaml(EXPERIMENTS / "crowd_pose/higher_hrnet/w32_512_adam_lr1e-3_syncbn.yaml").model.sync_bn
    w48 = C.load_yaml(EXPERIMENTS / "coco/higher_hrnet/w48_640_adam_lr1e-3.yaml")
    assert w48.model.stage4.num_channels == (48, 96, 192, 384)
    assert w48.model.deconv.num_channels == (48,)
    assert w48.train.images_per_gpu == 10
    assert w48.train.amp == "fp16"
    assert w48.data.output_size == (160, 320)
    assert C.load_yaml(EXPERIMENTS / "crowd_pose/higher_hrnet/w32_512_adam_lr1e-3.yaml").data.flip_index == (
        CROWDPOSE.flip_index
    )


def test_missing_keys_take_official_defaults(tmp_path: Path) -> None:
    src = (EXPERIMENTS / "coco/higher_hrnet/w32_512_adam_lr1e-3.yaml").read_text()
    trimmed = src.replace("  DETECTION_THRESHOLD: 0.1\n", "").replace("  MAX_SCALE: 1.5\n", "")
    trimmed = trimmed.replace("  SIGMA: 2\n", "").replace("  NMS_KERNEL: 5\n", "")
    assert trimmed != src
    path = tmp_path / "trimmed.yaml"
    path.write_text(trimmed)
    cfg = C.load_yaml(path)
    assert cfg.test.detection_threshold == 0.2  # default.py
    assert cfg.data.max_scale == 1.25  # default.py
    assert cfg.data.sigma == 2.0  # default -1 means output_size[0] / 64 = 128 / 64
    assert cfg.test.nms_kernel == 3


def test_unknown_key_names_key_and_nearest(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("TEST:\n  FLIP_TES: True\n")
    with pytest.raises(ConfigError, match=r"TEST\.FLIP_TES.*TEST\.FLIP_TEST"):
        C.load_yaml(path)
    with pytest.raises(ConfigError, match=r"train\.lrr.*train\.lr'"):
        C.apply_overrides(C.preset("tiny"), ["train.lrr=1"])


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        C.load_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        C.load_yaml(bad)
    with pytest.raises(ConfigError, match="preset"):
        C.resolve("coco_w32_521")


def test_overrides_are_typed_and_validated() -> None:
    cfg = C.apply_overrides(
        C.preset("coco_w32_512"),
        ["train.lr=2e-3", "test.flip_test=false", "test.scale_factor=[0.5,1,2]", "model.stage2.num_channels=[16,32]"],
    )
    assert cfg.train.lr == 2e-3
    assert cfg.test.flip_test is False
    assert cfg.test.scale_factor == (0.5, 1.0, 2.0)
    assert cfg.model.stage2.num_channels == (16, 32)
    # a list of booleans as YAML writes it (the official files' style) and as Python does
    for text in ("[true, true]", "[True, True]", "[yes,on]"):
        assert C.apply_overrides(cfg, [f"test.with_ae={text}"]).test.with_ae == (True, True)
    with pytest.raises(ConfigError, match="boolean"):
        C.apply_overrides(cfg, ["test.with_ae=[true, maybe]"])
    with pytest.raises(ConfigError, match="boolean"):
        C.apply_overrides(cfg, ["test.flip_test=maybe"])
    with pytest.raises(ConfigError, match="not one of"):
        C.apply_overrides(cfg, ["train.amp=fp8"])
    with pytest.raises(ConfigError, match="scale 1"):
        C.apply_overrides(cfg, ["test.scale_factor=[0.5,2]"])
    with pytest.raises(ConfigError, match="multiple of 32"):
        C.apply_overrides(cfg, ["data.input_size=500"])


def test_round_trip_dict_and_yaml(tmp_path: Path) -> None:
    for name in C.PRESETS:
        cfg = C.preset(name)
        assert C.from_dict(cfg.to_dict()) == cfg
        path = tmp_path / f"{name}.yaml"
        path.write_text(C.dump_yaml(cfg))
        assert C.load_yaml(path) == cfg


def test_presets_cover_issue_list() -> None:
    expected = {
        "coco_w32_512",
        "coco_w32_640",
        "coco_w48_640",
        "crowdpose_w32_512",
        "crowdpose_w32_640",
        "crowdpose_w48_640",
        "tiny",
    }
    assert set(C.PRESETS) == expected
    assert C.preset("crowdpose_w48_640").model.num_joints == 14
    assert C.preset("crowdpose_w32_512").data.test_split == "test"
