"""``hhrnet synth``: write the built-in synthetic multi-person dataset (COCO or CrowdPose format)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hhrnet.choices import DatasetName

_MIN_AREA_HELP = "People whose visible area (px) is below this get no keypoints, as in COCO; 0 labels everyone."


def synth(
    out_dir: Annotated[Path, typer.Argument(help="Dataset root to create.")],
    train: Annotated[int, typer.Option(help="Training images.")] = 400,
    val: Annotated[int, typer.Option(help="Validation images.")] = 100,
    size: Annotated[int, typer.Option(help="Square image size in pixels.")] = 256,
    dataset: Annotated[DatasetName, typer.Option(help="Annotation format.")] = "coco",
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 0,
    max_people: Annotated[int, typer.Option(help="Most people per image.")] = 6,
    min_keypoint_area: Annotated[float, typer.Option(help=_MIN_AREA_HELP)] = 32.0**2,  # as COCO_MIN_KEYPOINT_AREA
    max_overlap: Annotated[
        float,
        typer.Option(help="Re-place a figure whose box overlaps an earlier one by more than this fraction; 1: off."),
    ] = 1.0,
    force: Annotated[bool, typer.Option(help="Overwrite a non-empty OUT_DIR.")] = False,
) -> None:
    """Synthesize a multi-person keypoint dataset with no downloads."""
    from rich.console import Console

    from hhrnet.cli.common import check_number
    from hhrnet.data.synth import synthesize

    check_number("--size", size, 32, 4096)
    check_number("--train", train, 0, 1_000_000)
    check_number("--val", val, 0, 1_000_000)
    check_number("--max-people", max_people, 1, 100)
    check_number("--min-keypoint-area", min_keypoint_area, 0, None)

    summary = synthesize(
        out_dir,
        num_train=train,
        num_val=val,
        image_size=size,
        dataset=dataset,
        seed=seed,
        max_people=max_people,
        force=force,
        min_keypoint_area=min_keypoint_area,
        max_overlap=max_overlap,
    )
    console = Console(soft_wrap=True)
    for split in ("train", "val"):
        console.print(
            f"{split}: {summary.images[split]} images, {summary.people[split]} labelled people -> "
            f"{summary.annotation_files[split]}"
        )
