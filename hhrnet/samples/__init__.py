"""Real sample photos with real keypoint annotations, shipped with the package.

Copied byte for byte from ``tests/data/`` of the mmpose repository (github.com/open-mmlab/mmpose,
Apache-2.0); the photos keep their original dataset licences (COCO: Flickr terms; CrowdPose).

* ``coco/``: 4 COCO val2017 images and ``test_coco.json`` (17 joints, 14 person annotations, 181 labelled
  keypoints; two annotations have no keypoints). 785 is 640x425 with 1 person, 40083 500x333 with 3,
  196141 640x429 with 5, 197388 640x392 with 5.
* ``crowdpose/``: 2 CrowdPose images and ``test_crowdpose.json`` (14 joints, ``crowdIndex`` per image).

They are what ``bench latency``, export parity and the realistic decode scenes run on by default, and what
the tests read: nothing in the project reads a folder outside the repository.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def folder(dataset: str = "coco") -> Path:
    """The folder holding the sample images of ``dataset`` (coco or crowdpose)."""
    return ROOT / dataset


def annotation_file(dataset: str = "coco") -> Path:
    """The COCO-format annotation file of ``dataset``'s samples."""
    return folder(dataset) / f"test_{dataset}.json"


def images(dataset: str = "coco") -> list[Path]:
    """The sample image files of ``dataset``, sorted by name."""
    return sorted(p for p in folder(dataset).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
