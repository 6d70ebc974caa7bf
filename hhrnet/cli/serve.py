"""``hhrnet serve``: the served pipeline in a real Triton Inference Server on this machine (through PyTriton)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hhrnet.cli.common import EngineOpt, OnnxOpt

HostOpt = Annotated[
    str,
    typer.Option(
        help="Bind address of HTTP, gRPC and metrics (default 127.0.0.1: this machine only; 0.0.0.0: every interface)."
    ),
]
PortOpt = Annotated[int, typer.Option(help="Port.")]
InstancesOpt = Annotated[int, typer.Option(help="Instances of each model (preprocess, network, decode).")]
MaxBatchOpt = Annotated[int, typer.Option(help="Largest batch the network runs (and images per request).")]
WindowOpt = Annotated[int, typer.Option(help="Dynamic batching window: how long a request may wait for others (µs).")]
LetterboxServeOpt = Annotated[
    int | None, typer.Option(help="Input square (multiple of 64); default: the export's input size rounded up to 64.")
]


def serve(
    onnx: OnnxOpt = None,
    engine: EngineOpt = None,
    repository: Annotated[
        Path | None,
        typer.Option(help="Serve a repository written by hhrnet export --format triton --network-backend python."),
    ] = None,
    host: HostOpt = "127.0.0.1",
    http_port: PortOpt = 8000,
    grpc_port: PortOpt = 8001,
    metrics_port: PortOpt = 8002,
    instances: InstancesOpt = 1,
    max_batch: MaxBatchOpt = 8,
    batch_window_us: WindowOpt = 2000,
    letterbox: LetterboxServeOpt = None,
    threads: Annotated[int, typer.Option(help="ONNX Runtime threads per network instance (0: its default).")] = 0,
    max_image_pixels: Annotated[int, typer.Option(help="Refuse larger images (width x height).")] = 40_000_000,
    max_image_bytes: Annotated[int, typer.Option(help="Refuse larger encoded images.")] = 32 << 20,
    keep_repository: Annotated[
        Path | None, typer.Option(help="Write the generated model repository here (default: a temporary folder).")
    ] = None,
    log_file: Annotated[Path | None, typer.Option(help="Triton's log (default: a temporary file).")] = None,
    stop_timeout: Annotated[
        int, typer.Option(help="Seconds Triton may take to exit on Ctrl-C / SIGTERM before its processes are killed.")
    ] = 30,
) -> None:
    """Serve poses over HTTP and gRPC with Triton (dynamic batching, model instances, Prometheus metrics).

    Clients send encoded images to the model ``hhrnet`` (input ``image``, BYTES) and get ``keypoints``,
    ``scores`` and ``people``; see hhrnet.serve.client.PoseClient. Ctrl-C (or SIGTERM) stops the server, also
    while it starts; processes that outlive the stop by --stop-timeout seconds are killed (a second Ctrl-C kills
    at once).
    """
    import shutil
    import signal
    import tempfile

    from rich.console import Console

    from hhrnet.cli.common import check_number
    from hhrnet.errors import ConfigError
    from hhrnet.serve.pipeline import ImageLimits
    from hhrnet.serve.repository import ENSEMBLE, ServeOptions, read_contract, write_repository
    from hhrnet.serve.server import Endpoints, TritonServer, require_pytriton

    console = Console(stderr=True, soft_wrap=True)
    check_number("--instances", instances, 1, 64)
    check_number("--max-batch", max_batch, 1, 1024)
    check_number("--batch-window-us", batch_window_us, 0, 10_000_000)
    check_number("--threads", threads, 0, 1024)
    check_number("--max-image-pixels", max_image_pixels, 1, 1 << 30)
    check_number("--max-image-bytes", max_image_bytes, 1, 1 << 31)
    check_number("--stop-timeout", stop_timeout, 1, 3600)
    given = [n for n, v in (("--onnx", onnx), ("--engine", engine), ("--repository", repository)) if v is not None]
    if len(given) != 1:
        raise ConfigError("give one of --onnx, --engine or --repository to serve")
    require_pytriton()  # before writing anything
    endpoints = Endpoints(host, http_port, grpc_port, metrics_port)
    temporary: Path | None = None
    if repository is None:
        options = ServeOptions(
            max_batch_size=max_batch,
            max_queue_delay_us=batch_window_us,
            instances=instances,
            device="gpu" if engine is not None else "cpu",
            threads=threads,
            limits=ImageLimits(max_image_bytes, max_image_pixels),
        )
        if keep_repository is None:
            temporary = Path(tempfile.mkdtemp(prefix="hhrnet-serve-"))
        target = keep_repository or (temporary / "repository")  # type: ignore[operator]
        repo = write_repository(
            target,
            onnx=onnx,
            engine=engine,
            network_backend="python",
            letterbox=letterbox,
            options=options,
            overwrite=keep_repository is not None,
        )
        path, side = repo.path, repo.codec.letterbox
    else:
        contract = read_contract(repository)
        if contract.get("network_backend") != "python":
            raise ConfigError(
                f"{repository} runs its network on Triton's {contract.get('network_backend')} backend, which the "
                "bundled server lacks: run it in a Triton container, or export with --network-backend python"
            )
        path, side = repository, int(contract["served_codec"]["letterbox"])
    server: TritonServer | None = None
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops as cleanly as Ctrl-C
    try:
        server = TritonServer(path, endpoints, log_file=log_file, stop_timeout_s=stop_timeout)
        console.print(
            f"starting Triton on {path} (input {side}x{side} letterbox; on a cold Numba cache the decoder is "
            "compiled first, about a minute on 2 cores) ...",
            highlight=False,
        )
        with server:
            console.print(
                f"serving model '{ENSEMBLE}': HTTP {endpoints.http_url}, gRPC {endpoints.grpc_url}, "
                f"metrics {endpoints.metrics_url}; log {server.log_file}\n"
                f"statistics need header triton-access-token: {server.access_token}\n"
                "Ctrl-C to stop",
                highlight=False,
            )
            server.serve_forever()
    except KeyboardInterrupt:
        if server is not None and server.killed:
            console.print(
                f"stopped ({server.killed} of Triton's processes did not exit within {stop_timeout} s and were killed)",
                highlight=False,
            )
        else:
            console.print("stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
