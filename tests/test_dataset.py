"""Keypoint dataset on the real COCO / CrowdPose samples: shapes, masks, layouts, skipping bad files."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hhrnet import samples
from hhrnet.config import Config, preset
from hhrnet.data import transforms as T
from hhrnet.data.coco import build_dataset, collate, find_split_files
from hhrnet.errors import InputError

COCO_DIR = samples.folder("coco")
COCO_JSON = COCO_DIR / "test_coco.json"
CROWD_DIR = samples.folder("crowdpose")
CROWD_JSON = CROWD_DIR / "test_crowdpose.json"


def _small(name: str = "coco_w32_512") -> Config:
    """The preset at input 128 (outputs 32, 64) to keep the tests fast."""
    cfg = preset(name)
    return replace(cfg, data=replace(cfg.data, input_size=128, output_size=(32, 64)))


def _copy_coco(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "imgs"
    shutil.copytree(COCO_DIR, images)
    return images / "test_coco.json", images


def test_coco_items_have_official_shapes_and_types() -> None:
    cfg = preset("coco_w32_512")
    ds = build_dataset(cfg, "train", ann_file=COCO_JSON, image_dir=COCO_DIR, seed=0)
    assert len(ds) == 4 and ds.ids == [785, 40083, 196141, 197388]
    item = ds[2]
    assert item["image_id"] == 196141 and item["skipped"] == ()
    assert item["image"].shape == (3, 512, 512) and item["image"].dtype == torch.float32
    assert [tuple(h.shape) for h in item["heatmaps"]] == [(17, 128, 128), (17, 256, 256)]
    assert [tuple(m.shape) for m in item["masks"]] == [(128, 128), (256, 256)]
    assert [tuple(j.shape) for j in item["joints"]] == [(30, 17, 2), (30, 17, 2)]
    assert all(j.dtype == torch.int64 for j in item["joints"])
    assert -2.2 < float(item["image"].min()) and float(item["image"].max()) < 2.7
    # 5 annotations, one with 0 keypoints kept as an empty person; 59 labelled keypoints before augmentation
    people = ds.person_joints(ds._annotations(2)[1], "x")
    assert people.shape == (5, 17, 3) and (people[..., 2] > 0).sum() == 59
    assert (people[..., 2] > 0).sum(axis=1).tolist() == [15, 15, 0, 12, 17]
    for k in range(2):
        used = item["joints"][k][..., 1].sum()
        assert 0 < used <= 59
        assert float(item["heatmaps"][k].max()) == 1.0
    # same seed, same sample; another epoch, another draw
    again = build_dataset(cfg, "train", ann_file=COCO_JSON, image_dir=COCO_DIR, seed=0)[2]
    assert torch.equal(again["image"], item["image"]) and torch.equal(again["joints"][0], item["joints"][0])
    ds.set_epoch(1)
    assert not torch.equal(ds[2]["image"], item["image"])


def test_coco_val_targets_follow_the_centre_crop() -> None:
    """val: no augmentation; a labelled joint lands where the centre-crop matrix sends it."""
    cfg = _small()
    ds = build_dataset(cfg, "val", ann_file=COCO_JSON, image_dir=COCO_DIR)
    item = ds[0]  # 785: 640x425, one person with 17 keypoints
    ann = ds._annotations(0)[1][0]
    nose = np.array(ann["keypoints"][:2], dtype=float)
    mat = T.affine_matrix((320.0, 212.5), 425 / 200, 32)
    x, y = (int(v) for v in T.transform_points(nose, mat))
    assert item["heatmaps"][0][0, y, x] == 1.0
    assert int(item["joints"][0][0, 0, 0]) == y * 32 + x and int(item["joints"][0][0, 0, 1]) == 1
    assert float(item["masks"][0].min()) == 1.0  # no crowd, no empty person, no padding in a centre crop


@pytest.mark.parametrize("index", [1, 2])
def test_zero_keypoint_polygons_are_ignored(index: int) -> None:
    cfg = _small()
    ds = build_dataset(cfg, "val", ann_file=COCO_JSON, image_dir=COCO_DIR)
    info, anns = ds._annotations(index)
    mask = ds.ignore_mask(info, anns, "x")
    assert mask.shape == (info["height"], info["width"]) and mask.dtype == bool
    empty = [a for a in anns if a["num_keypoints"] == 0]
    assert len(empty) == 1
    drawn = np.zeros(mask.shape, np.uint8)
    poly = np.asarray(empty[0]["segmentation"][0]).reshape(-1, 2)
    cv2.fillPoly(drawn, [np.round(poly).astype(np.int32)], 1)
    inner = cv2.erode(drawn, np.ones((5, 5), np.uint8)).astype(bool)
    assert inner.sum() > 50
    assert not mask[inner].any()  # inside the polygon: ignored
    assert mask[~cv2.dilate(drawn, np.ones((5, 5), np.uint8)).astype(bool)].all()  # elsewhere: supervised
    hole = ~mask
    assert (hole & drawn.astype(bool)).sum() / (hole | drawn.astype(bool)).sum() > 0.7  # same region
    # after the centre-crop warp the hole is still there at the output resolution
    item = ds[index]
    mat = T.affine_matrix((info["width"] / 2, info["height"] / 2), min(info["height"], info["width"]) / 200, 64)
    centre = T.transform_points(poly.mean(axis=0), mat).astype(int)
    assert float(item["masks"][1][centre[1], centre[0]]) == 0.0
    assert float(item["masks"][1].mean()) > 0.95


def test_crowdpose_items_have_14_joints_and_full_masks() -> None:
    cfg = _small("crowdpose_w32_512")
    ds = build_dataset(cfg, "val", ann_file=CROWD_JSON, image_dir=CROWD_DIR)
    assert len(ds) == 2
    for i in range(2):
        item = ds[i]
        assert [tuple(h.shape) for h in item["heatmaps"]] == [(14, 32, 32), (14, 64, 64)]
        assert [tuple(j.shape) for j in item["joints"]] == [(30, 14, 2), (30, 14, 2)]
        assert all(float(m.min()) == 1.0 for m in item["masks"])  # CrowdPose: never masked
    people = ds.person_joints(ds._annotations(0)[1], "x")  # 106848: 3 annotations, one without keypoints
    assert people.shape == (3, 14, 3) and (people[..., 2] > 0).sum(axis=1).tolist() == [7, 0, 12]
    train = build_dataset(cfg, "train", ann_file=CROWD_JSON, image_dir=CROWD_DIR, seed=3)
    masks = train[0]["masks"][0]
    assert set(np.unique(masks.numpy()).tolist()) <= {0.0, 1.0}  # zeros only where the warp pads


def test_corrupt_image_is_skipped_and_reported(tmp_path: Path) -> None:
    ann, images = _copy_coco(tmp_path)
    bad = images / "000000040083.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg" * 10)
    cfg = _small()
    ds = build_dataset(cfg, "train", ann_file=ann, image_dir=images, seed=0)
    item = ds[1]
    assert item["image_id"] == 196141  # the next readable image
    assert len(item["skipped"]) == 1 and "000000040083.jpg" in item["skipped"][0]
    assert len(ds.skipped) == 1 and "000000040083.jpg" in ds.skipped[0]
    assert ds[1]["image_id"] == 196141 and len(ds.skipped) == 1  # remembered, not re-read
    batch = collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 3, 128, 128) and batch["image_id"].tolist() == [785, 196141]
    assert [tuple(j.shape) for j in batch["joints"]] == [(2, 30, 17, 2), (2, 30, 17, 2)]
    strict = build_dataset(cfg, "train", ann_file=ann, image_dir=images, on_error="raise")
    with pytest.raises(InputError, match="000000040083.jpg"):
        strict[1]
    (images / "000000000785.jpg").unlink()
    with pytest.raises(InputError, match="image not found: .*000000000785.jpg"):
        strict[0]


def test_skips_in_dataloader_workers_reach_the_main_process(tmp_path: Path) -> None:
    ann, images = _copy_coco(tmp_path)
    (images / "000000197388.jpg").write_bytes(b"garbage")
    ds = build_dataset(_small(), "val", ann_file=ann, image_dir=images)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    batches = list(loader)
    ids = [i for b in batches for i in b["image_id"].tolist()]
    assert ids == [785, 40083, 196141, 785]  # the bad last image is replaced by the next one (wrapping)
    skipped = [s for b in batches for s in b["skipped"]]
    assert len(skipped) == 1 and "000000197388.jpg" in skipped[0]


def test_size_mismatch_and_bad_keypoints_are_reported(tmp_path: Path) -> None:
    ann, images = _copy_coco(tmp_path)
    data = json.loads(ann.read_text())
    data["images"][0]["width"] = 600  # 785 is really 640 wide
    data["annotations"][2]["keypoints"] = data["annotations"][2]["keypoints"][:-3]  # 40083: 16 joints
    ann.write_text(json.dumps(data))
    ds = build_dataset(_small(), "train", ann_file=ann, image_dir=images, seed=0)
    assert ds[0]["image_id"] == 196141
    assert len(ds.skipped) == 2
    assert "000000000785.jpg" in ds.skipped[0] and "640x425" in ds.skipped[0] and "600x425" in ds.skipped[0]
    assert "image id 40083" in ds.skipped[1] and "expected 51 numbers, got 48 values" in ds.skipped[1]
    with pytest.raises(InputError, match="image id 40083.*expected 51"):
        ds.load_sample(1)


def test_malformed_annotation_file_raises_naming_it(tmp_path: Path) -> None:
    broken = tmp_path / "person_keypoints_broken.json"
    broken.write_text('{"images": [], "annotations": [')
    with pytest.raises(InputError, match="malformed annotation file .*person_keypoints_broken.json"):
        build_dataset(_small(), "train", ann_file=broken, image_dir=tmp_path)
    broken.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}],
                "annotations": [{"id": 3, "keypoints": []}],
            }
        )
    )
    with pytest.raises(InputError, match=r"person_keypoints_broken.json: annotations\[0\] needs id and image_id"):
        build_dataset(_small(), "train", ann_file=broken, image_dir=tmp_path)
    with pytest.raises(InputError, match="annotation file not found"):
        build_dataset(_small(), "train", ann_file=tmp_path / "nope.json", image_dir=tmp_path)


def _link_images(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for p in src.glob("*.jpg"):
        (dst / p.name).symlink_to(p)


def test_official_and_synthetic_layouts_are_found(tmp_path: Path) -> None:
    coco = tmp_path / "coco"
    _link_images(COCO_DIR, coco / "images" / "val2017")
    (coco / "annotations").mkdir()
    shutil.copy(COCO_JSON, coco / "annotations" / "person_keypoints_val2017.json")
    ds = build_dataset(_small(), "val", root=coco)
    assert ds.image_path(0) == coco / "images" / "val2017" / "000000000785.jpg" and len(ds) == 4
    assert ds[3]["image_id"] == 197388

    crowd = tmp_path / "crowd_pose"
    _link_images(CROWD_DIR, crowd / "images")
    (crowd / "json").mkdir()
    shutil.copy(CROWD_JSON, crowd / "json" / "crowdpose_trainval.json")
    ds = build_dataset(_small("crowdpose_w32_512"), "train", root=crowd, seed=1)
    assert ds.image_path(1) == crowd / "images" / "103319.jpg" and ds[1]["image_id"] == 103319

    synth = tmp_path / "synth"  # tiny preset: splits 'train' / 'val', COCO-style folders
    _link_images(COCO_DIR, synth / "images" / "train")
    (synth / "annotations").mkdir()
    shutil.copy(COCO_JSON, synth / "annotations" / "person_keypoints_train.json")
    tiny = preset("tiny")
    ds = build_dataset(tiny, "train", root=synth, seed=0)
    assert [tuple(h.shape) for h in ds[0]["heatmaps"]] == [(17, 64, 64), (17, 128, 128)]
    with pytest.raises(InputError, match="person_keypoints_val.json"):
        build_dataset(tiny, "val", root=synth)
    assert find_split_files(synth, "train") == (
        synth / "annotations" / "person_keypoints_train.json",
        synth / "images" / "train",
    )


def test_bad_image_size_in_annotation_file_raises(tmp_path: Path) -> None:
    ann = tmp_path / "a.json"
    ann.write_text(
        json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "height": "tall", "width": 4}], "annotations": []})
    )
    with pytest.raises(InputError, match=r"a.json: images\[0\] height/width must be positive integers"):
        build_dataset(_small(), "val", ann_file=ann, image_dir=tmp_path)
