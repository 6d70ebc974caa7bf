"""Evaluation equals pycocotools with the official settings; CrowdPose rules; CLI eval/predict on real samples."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hhrnet import samples
from hhrnet.errors import InputError
from hhrnet.evaluate import evaluate_predictions, figure_mixing, result_entries


def _gt_dets(ann: Path) -> list[dict]:
    d = json.loads(ann.read_text())
    return [
        {"image_id": a["image_id"], "keypoints": a["keypoints"], "score": 1.0}
        for a in d["annotations"]
        if a["num_keypoints"] > 0
    ]


def test_ground_truth_scores_one() -> None:
    coco = samples.annotation_file("coco")
    crowd = samples.annotation_file("crowdpose")
    assert evaluate_predictions(_gt_dets(coco), coco, "coco")["AP"] == pytest.approx(1.0)
    stats = evaluate_predictions(_gt_dets(crowd), crowd, "crowdpose")
    assert stats["AP"] == pytest.approx(1.0) and stats["AP (M)"] == pytest.approx(1.0)  # crowdIndex 0.33, 0.39
    assert np.isnan(stats["AP (E)"]) and np.isnan(stats["AP (H)"])


def test_figure_mixing_counts_a_pose_that_takes_a_joint_of_another_person() -> None:
    for dataset in ("coco", "crowdpose"):
        ann = samples.annotation_file(dataset)
        gt = json.loads(ann.read_text())
        dets = _gt_dets(ann)
        clean = figure_mixing(dets, gt, dataset)
        assert clean == {"poses": len(dets), "joining": 0, "images": 0}  # every labelled person: one figure
        kps = [np.asarray(d["keypoints"], dtype=float).reshape(-1, 3) for d in dets]
        i, k, j = next(
            (i, k, int(np.flatnonzero(both)[0]))
            for i, k in itertools.permutations(range(len(dets)), 2)
            if dets[i]["image_id"] == dets[k]["image_id"] and (both := (kps[i][:, 2] > 0) & (kps[k][:, 2] > 0)).any()
        )  # two people of one image with a joint labelled on both
        mixed = kps[i].copy()
        mixed[j, :2] = kps[k][j, :2]  # one joint on the other person: the skeleton crosses to them
        swapped = [dict(d, keypoints=mixed.ravel().tolist()) if n == i else d for n, d in enumerate(dets)]
        assert figure_mixing(swapped, gt, dataset) == {"poses": len(dets), "joining": 1, "images": 1}
        hidden = mixed.copy()
        hidden[j, 2] = 0.05  # a joint the drawing does not show is not counted
        assert figure_mixing([dict(dets[i], keypoints=hidden.ravel().tolist())], gt, dataset)["joining"] == 0
        assert figure_mixing(swapped, gt, dataset, min_score=2.0)["poses"] == 0  # below the score: not counted


def test_figure_mixing_sees_people_too_small_for_keypoints_by_their_outline() -> None:
    """A joint on an unlabelled person's outline (COCO's and the built-in data's people under 32^2 px) counts,
    a joint on the background or where two other outlines overlap does not, and an occluded joint that matches its
    labelled person's keypoint belongs to that person even when it lies on the occluder's outline."""

    def person(pid: int, box: tuple[int, int, int, int], keypoints: np.ndarray | None = None) -> dict:
        """An annotation outlined by the box (x0, y0, x1, y1); no keypoints: too small to carry them."""
        x0, y0, x1, y1 = box
        kps = keypoints if keypoints is not None else np.zeros((17, 3))
        return {
            "id": pid,
            "image_id": 1,
            "iscrowd": 0,
            "num_keypoints": int((kps[:, 2] > 0).sum()),
            "keypoints": kps.ravel().tolist(),
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "area": float((x1 - x0) * (y1 - y0)),
            "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
        }

    kp = np.zeros((17, 3))
    kp[:, 0], kp[:, 1], kp[:, 2] = np.linspace(12, 28, 17), np.linspace(12, 58, 17), 2
    kp[16] = (45, 45, 1)  # labelled but occluded: it lies on the small person's outline
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.jpg"}],
        "annotations": [person(1, (10, 10, 30, 60), kp), person(2, (40, 40, 60, 60)), person(3, (50, 55, 70, 90))],
    }

    def joins(moved: tuple[float, float] | None) -> int:
        pose = kp.copy()
        pose[:, 2] = 0.9
        if moved is not None:
            pose[3, :2] = moved
        return figure_mixing([{"image_id": 1, "keypoints": pose.ravel().tolist(), "score": 0.9}], gt)["joining"]

    assert joins(None) == 0  # its own joints, the occluded one included
    assert joins((50, 50)) == 1  # a joint on the small unlabelled person
    assert joins((80, 20)) == 0  # on the background: says nothing
    assert joins((55, 57)) == 0  # where the second and third outlines overlap: says nothing
    assert joins((65, 80)) == 1  # on the third alone


def _oks(gt: np.ndarray, dt: np.ndarray, area: float, sigmas: np.ndarray) -> float:
    vis = gt[:, 2] > 0
    d2 = ((gt[:, :2] - dt[:, :2]) ** 2).sum(1)
    var = (2 * sigmas) ** 2
    return float(np.exp(-d2 / var / (area + np.spacing(1)) / 2)[vis].mean())


def test_single_person_matches_independent_oks(tmp_path: Path) -> None:
    src = json.loads((samples.annotation_file("coco")).read_text())
    ann = next(a for a in src["annotations"] if a["image_id"] == 785)
    gt_doc = {
        "images": [i for i in src["images"] if i["id"] == 785],
        "annotations": [ann],
        "categories": src["categories"],
    }
    gt = np.array(ann["keypoints"], float).reshape(17, 3)
    sigmas = (
        np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89])
        / 10
    )
    for shift in (2.0, 8.0, 20.0):
        dt = gt.copy()
        dt[:, 0] += shift
        oks = _oks(gt, dt, ann["area"], sigmas)
        expected = np.mean([oks >= t for t in np.linspace(0.5, 0.95, 10)])  # one GT, one detection
        got = evaluate_predictions([{"image_id": 785, "keypoints": dt.reshape(-1).tolist(), "score": 0.9}], gt_doc)
        assert got["AP"] == pytest.approx(expected, abs=1e-6), shift


def test_scores_rank_the_detections() -> None:
    """One person, an exact detection and a far-off one: scored above the exact one, the far-off detection comes
    first in the evaluator's ranking, so at full recall precision is 1/2 and AP 0.5; scored below it, AP is 1."""
    src = json.loads((samples.annotation_file("coco")).read_text())
    ann = next(a for a in src["annotations"] if a["image_id"] == 785)
    images = [i for i in src["images"] if i["id"] == 785]
    gt_doc = {"images": images, "annotations": [ann], "categories": src["categories"]}
    exact = np.array(ann["keypoints"], np.float32).reshape(1, 17, 3)
    far = exact.copy()
    far[..., :2] += 150.0  # OKS ~ 0: a false positive at every threshold
    for far_score, exact_score, expected in ((0.9, 0.3, 0.5), (0.3, 0.9, 1.0)):
        entries = result_entries(785, np.concatenate([far, exact]), np.array([far_score, exact_score], np.float32))
        assert evaluate_predictions(entries, gt_doc)["AP"] == pytest.approx(expected, abs=1e-6), far_score


def test_crowdpose_uses_box_area_times_053() -> None:
    from hhrnet.datasets import CROWDPOSE

    src = json.loads((samples.annotation_file("crowdpose")).read_text())
    ann = max((a for a in src["annotations"] if a["num_keypoints"] > 0), key=lambda a: a["num_keypoints"])
    doc = {
        "images": [i for i in src["images"] if i["id"] == ann["image_id"]],
        "annotations": [ann],
        "categories": src["categories"],
    }
    gt = np.array(ann["keypoints"], float).reshape(14, 3)
    area = ann["bbox"][2] * ann["bbox"][3] * 0.53
    for shift in (3.0, 10.0):
        dt = gt.copy()
        dt[:, 0] += shift
        oks = _oks(gt, dt, area, np.asarray(CROWDPOSE.oks_sigmas))
        expected = np.mean([oks >= t for t in np.linspace(0.5, 0.95, 10)])
        det = [{"image_id": ann["image_id"], "keypoints": dt.reshape(-1).tolist(), "score": 0.9}]
        assert evaluate_predictions(det, doc, "crowdpose")["AP"] == pytest.approx(expected, abs=1e-6), shift


def test_results_format_and_errors(tmp_path: Path) -> None:
    kp = np.array([[[10, 20, 0.5], [30, 5, 0.9]]], np.float32)
    (entry,) = result_entries(7, kp, np.array([0.7], np.float32))
    assert entry["bbox"] == [10.0, 5.0, 20.0, 15.0] and entry["category_id"] == 1 and entry["image_id"] == 7
    assert len(entry["keypoints"]) == 6
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="bad.json"):
        evaluate_predictions(bad, samples.annotation_file("coco"))
    with pytest.raises(InputError, match="entry 0 lacks image_id, keypoints, score"):
        evaluate_predictions([{"x": 1}], samples.annotation_file("coco"))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hhrnet", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"CI": "true", "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hhrnet.checkpoint import make_payload, save_checkpoint
    from hhrnet.config import preset
    from hhrnet.model import build_model

    cfg = preset("tiny")
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.pth", make_payload(build_model(cfg), cfg))


def test_cli_predict_folder_with_a_corrupt_file(tmp_path: Path, tiny_ckpt: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in samples.images("coco"):
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 garbage")
    proc = _cli("predict", str(folder), "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "4/5 files predicted" in proc.stdout and "skipped" in proc.stderr and "broken.jpg" in proc.stderr
    doc = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert len(doc["predictions"]) == 4 and doc["failures"][0][0].endswith("broken.jpg")
    assert len(list((tmp_path / "out").glob("*_pose.jpg"))) == 4


def test_cli_eval_model_and_predictions(tmp_path: Path, tiny_ckpt: Path) -> None:
    coco = samples.folder("coco")
    proc = _cli(
        "eval",
        "--checkpoint",
        str(tiny_ckpt),
        "--images",
        str(coco),
        "--annotations",
        str(coco / "test_coco.json"),
        "--out",
        str(tmp_path / "res.json"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "AP" in proc.stdout and "(4 images)" in proc.stdout
    assert isinstance(json.loads((tmp_path / "res.json").read_text()), list)
    gt = tmp_path / "gt_as_pred.json"
    gt.write_text(json.dumps(_gt_dets(samples.annotation_file("crowdpose"))))
    proc = _cli(
        "eval",
        "--predictions",
        str(gt),
        "--annotations",
        str(samples.folder("crowdpose") / "test_crowdpose.json"),
        "--dataset",
        "crowdpose",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    header, values = proc.stdout.splitlines()[1:3]  # not a terminal: full-precision tab-separated table
    stats = dict(zip(header.split("\t"), values.split("\t"), strict=True))
    assert stats["AP"] == "1.0" and "AP (E)" in stats
