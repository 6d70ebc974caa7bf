"""The ``hhrnet`` command: a Typer app over one module per command.

Command modules import only typer/stdlib at module level; torch, onnx and tensorrt are imported
inside command bodies so ``hhrnet --help`` stays instant. Errors that the user can fix
(:class:`~hhrnet.errors.HHRNetError`) print as one line without a traceback; ``--debug`` shows it.
"""

from __future__ import annotations

import sys

import typer

from hhrnet.cli import bench, demo, export, info, predict, serve, synth, train
from hhrnet.cli import config as config_cmd
from hhrnet.cli import eval as eval_cmd

app = typer.Typer(
    name="hhrnet",
    help="HigherHRNet multi-person pose estimation: train, evaluate, predict, export, benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


@app.callback()
def _root() -> None:
    """HigherHRNet multi-person pose estimation: train, evaluate, predict, export, benchmark.

    Add --debug to any command to see the traceback of an error.
    """


app.command("info")(info.info)
app.command("config")(config_cmd.config)
app.command("synth")(synth.synth)
app.command("train")(train.train)
app.command("predict")(predict.predict)
app.command("eval")(eval_cmd.evaluate)
app.command("export")(export.export)
app.command("serve")(serve.serve)
app.add_typer(bench.bench_app, name="bench")
app.command("demo")(demo.demo)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    from hhrnet.errors import HHRNetError

    try:
        app(args=args, prog_name="hhrnet")  # standalone: usage errors and --help exit via SystemExit
    except HHRNetError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
