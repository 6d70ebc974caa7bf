"""Built-in synthetic dataset: valid COCO/CrowdPose json, consistent labels, determinism, perfect-score GT."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from hhrnet.data.synth import synthesize
from hhrnet.errors import InputError


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, num_train=24, num_val=8, image_size=(192, 160), seed=3)
    return root


def test_layout_and_cocoapi_loading(coco_root: Path) -> None:
    from pycocotools.coco import COCO

    for split, n in (("train", 24), ("val", 8)):
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(coco_root / "annotations" / f"person_keypoints_{split}.json"))
        assert len(coco.getImgIds()) == n
        for img in coco.loadImgs(coco.getImgIds()):
            assert (coco_root / "images" / split / img["file_name"]).is_file()
            assert img["file_name"] == f"{img['id']:012d}.jpg"  # official image_id parsing works
            assert (img["width"], img["height"]) == (192, 160)
    ids = [a["id"] for s in ("train", "val") for a in _anns(coco_root, s)["annotations"]]
    assert len(ids) == len(set(ids))


def _anns(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"person_keypoints_{split}.json").read_text())


def test_labels_are_consistent(coco_root: Path) -> None:
    doc = _anns(coco_root, "train")
    crowd = [a for a in doc["annotations"] if a["iscrowd"]]
    people = [a for a in doc["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]
    unlabelled = [a for a in doc["annotations"] if not a["iscrowd"] and a["num_keypoints"] == 0]
    assert people and crowd and unlabelled  # the masks' two sources are exercised
    assert all(isinstance(a["segmentation"], dict) and "counts" in a["segmentation"] for a in crowd)
    assert all(isinstance(a["segmentation"], list) and a["segmentation"] for a in unlabelled)
    vis = np.concatenate([np.array(a["keypoints"]).reshape(17, 3)[:, 2] for a in people])
    assert set(np.unique(vis)) == {0, 1, 2}  # occluded, visible and missing joints all occur
    for a in people:
        k = np.array(a["keypoints"], float).reshape(17, 3)
        on = k[:, 2] > 0
        assert a["num_keypoints"] == int(on.sum())
        assert ((k[on, 0] >= 0) & (k[on, 0] < 192) & (k[on, 1] >= 0) & (k[on, 1] < 160)).all()
        assert (k[~on, :2] == 0).all()
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0 and a["area"] > 0
    # facing the camera: the left shoulder is on the image right of the right shoulder
    right_of = [np.array(a["keypoints"]).reshape(17, 3)[[5, 6], 0] for a in people]
    assert np.mean([left > right for left, right in right_of]) > 0.8


def test_deterministic(tmp_path: Path) -> None:
    def digest(root: Path) -> str:
        h = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            if p.is_file():
                h.update(p.name.encode() + p.read_bytes())
        return h.hexdigest()

    synthesize(tmp_path / "a", num_train=4, num_val=2, image_size=128, seed=5)
    synthesize(tmp_path / "b", num_train=4, num_val=2, image_size=128, seed=5)
    synthesize(tmp_path / "c", num_train=4, num_val=2, image_size=128, seed=6)
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    synthesize(tmp_path, num_train=1, num_val=1, image_size=64)
    with pytest.raises(InputError, match="not empty.*--force"):
        synthesize(tmp_path, num_train=1, num_val=1, image_size=64)
    synthesize(tmp_path, num_train=1, num_val=1, image_size=64, force=True)


def test_crowdpose_variant(tmp_path: Path) -> None:
    synthesize(tmp_path, num_train=6, num_val=2, image_size=128, dataset="crowdpose", seed=1, min_people=2)
    doc = _anns(tmp_path, "train")
    assert doc["categories"][0]["keypoints"][-2:] == ["head", "neck"]
    assert all("crowdIndex" in img and 0 <= img["crowdIndex"] for img in doc["images"])
    assert all(len(a["keypoints"]) == 42 and "area" not in a for a in doc["annotations"])


def test_ground_truth_scores_perfect_ap(coco_root: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    doc = _anns(coco_root, "val")
    dets = [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
        for a in doc["annotations"]
        if not a["iscrowd"] and a["num_keypoints"] > 0
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(coco_root / "annotations" / "person_keypoints_val.json"))
        ev = COCOeval(gt, gt.loadRes(dets), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_min_keypoint_area_unlabels_small_people(tmp_path: Path) -> None:
    """COCO leaves people under 32^2 px without keypoints: the same images, those people become ignore regions."""
    synthesize(tmp_path / "all", num_train=12, num_val=2, image_size=192, seed=4)
    synthesize(tmp_path / "coco", num_train=12, num_val=2, image_size=192, seed=4, min_keypoint_area=32.0**2)
    for name in ("000000000001.jpg", "000000000007.jpg"):
        a, b = (tmp_path / d / "images" / "train" / name for d in ("all", "coco"))
        assert a.read_bytes() == b.read_bytes()
    every, coco = (_anns(tmp_path / d, "train") for d in ("all", "coco"))
    assert coco["info"]["min_keypoint_area"] == 1024.0 and every["info"]["min_keypoint_area"] == 0.0
    assert len(every["annotations"]) == len(coco["annotations"])
    unlabelled = 0
    for before, after in zip(every["annotations"], coco["annotations"], strict=True):
        if before["iscrowd"] or before["num_keypoints"] == 0:
            assert after == before
        elif before["area"] < 1024:
            unlabelled += 1
            assert after["num_keypoints"] == 0 and not any(after["keypoints"])
            assert after["segmentation"] == before["segmentation"] and after["segmentation"]  # an ignore region
        else:
            assert after == before
    assert unlabelled > 0


def test_cli_labels_like_coco_by_default(tmp_path: Path) -> None:
    """``hhrnet synth`` writes the demo's data (COCO's 32^2 px rule) unless told to label everyone."""
    from typer.testing import CliRunner

    from hhrnet.cli.app import app
    from hhrnet.data.synth import COCO_MIN_KEYPOINT_AREA

    runner = CliRunner()
    for args, area in (([], COCO_MIN_KEYPOINT_AREA), (["--min-keypoint-area", "0"], 0.0)):
        out = tmp_path / str(area)
        result = runner.invoke(app, ["synth", str(out), "--train", "1", "--val", "1", "--size", "64", *args])
        assert result.exit_code == 0, result.output
        assert _anns(out, "val")["info"]["min_keypoint_area"] == area


def _heavy_overlap_share(root: Path) -> float:
    """Share of pairs of labelled people in one image whose keypoint boxes overlap by > 0.3 of the smaller box."""
    from hhrnet.data.synth import _box_overlap

    doc = _anns(root, "train")
    boxes: dict[int, list[np.ndarray]] = {}
    for a in doc["annotations"]:
        k = np.array(a["keypoints"], float).reshape(-1, 3)
        k = k[k[:, 2] > 0]
        if len(k) >= 5:
            boxes.setdefault(a["image_id"], []).append(np.concatenate([k[:, :2].min(0), k[:, :2].max(0)]))
    pairs = [_box_overlap(b[i], b[j]) for b in boxes.values() for i in range(len(b)) for j in range(i)]
    return float(np.mean(np.array(pairs) > 0.3))


def test_max_overlap_makes_total_overlaps_rare(tmp_path: Path) -> None:
    """max_overlap re-places figures that overlap earlier ones heavily (the people's sizes stay); 1 is the default."""
    synthesize(tmp_path / "any", num_train=40, num_val=1, image_size=192, seed=5)
    synthesize(tmp_path / "spread", num_train=40, num_val=1, image_size=192, seed=5, max_overlap=0.3)
    assert _anns(tmp_path / "spread", "train")["info"]["max_overlap"] == 0.3
    assert _anns(tmp_path / "any", "train")["info"]["max_overlap"] == 1.0
    before, after = _heavy_overlap_share(tmp_path / "any"), _heavy_overlap_share(tmp_path / "spread")
    assert after < 0.5 * before, (before, after)


def test_box_overlap() -> None:
    from hhrnet.data.synth import _box_overlap

    a = np.array([0.0, 0.0, 10.0, 10.0])
    assert _box_overlap(a, np.array([2.0, 2.0, 4.0, 4.0])) == 1.0  # inside: the smaller box is covered
    assert _box_overlap(a, np.array([5.0, 0.0, 15.0, 10.0])) == pytest.approx(0.5)
    assert _box_overlap(a, np.array([10.0, 0.0, 20.0, 10.0])) == 0.0  # touching
