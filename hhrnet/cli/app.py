"""The ``hhrnet`` command: a Typer app over one module per command.

Command modules import only typer/stdlib at module level; torch, onnx and tensorrt are imported
inside command bodies so ``hhrnet --help`` stays instant. Errors that the user can fix
(:class:`~hhrnet.errors.HHRNetError`) print as one line without a traceback; ``--debug`` shows it.
"""

from __future__ import annotations

import sys

import click
import typer

from hhrnet.cli import info

app = typer.Typer(
    name="hhrnet",
    help="HigherHRNet multi-person pose estimation: train, evaluate, predict, export, benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
app.command("info")(info.info)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    from hhrnet.errors import HHRNetError

    try:
        result = app(args=args, prog_name="hhrnet", standalone_mode=False)
    except HHRNetError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        return 2
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
