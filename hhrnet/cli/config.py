"""``hhrnet config``: write a preset (or any config, with --set applied) as a YAML file --config reads back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hhrnet.cli.common import SetOpt


def config(
    name: Annotated[str, typer.Argument(help="Preset name (coco_w32_512, ..., tiny) or a YAML file.")],
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="Write here (default: print).")] = None,
) -> None:
    """Print or write a config as YAML; edit it and pass it back with --config FILE."""
    from hhrnet.cli.common import check_output_file
    from hhrnet.config import dump_yaml, resolve
    from hhrnet.io import atomic_write_text

    check_output_file("--out", out)
    text = dump_yaml(resolve(name, set_ or []))
    if out is None:
        typer.echo(text, nl=False)
        return
    atomic_write_text(out, text)
    typer.echo(f"wrote {out}", err=True)
