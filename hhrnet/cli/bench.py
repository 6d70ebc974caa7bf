"""``hhrnet bench latency | peak | parity | serve | gate``: measured numbers, never typed by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hhrnet.choices import Int8Target
from hhrnet.cli.common import CheckpointOpt, ConfigOpt, JsonOpt, OnnxOpt, SetOpt, check_output_file
from hhrnet.cli.output import print_table

bench_app = typer.Typer(help="Latency, AP-parity, serving and the CI regression gate.", no_args_is_help=True)

CompareOpt = Annotated[Path | None, typer.Option("--compare", help="Baseline rows (JSON) to compare ratios against.")]
RegressionOpt = Annotated[str, typer.Option("--max-regression", help="Allowed ratio regression, e.g. 10%.")]
VariantOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--variant",
        help="More ONNX files of the same model (e.g. hhrnet export --precision fp16/int8), measured in the same "
        "run as --onnx (repeatable).",
    ),
]


@bench_app.command("latency")
def latency(
    checkpoint: CheckpointOpt = None,
    onnx: OnnxOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    image: Annotated[Path | None, typer.Option(help="Photo to time (default: the first COCO sample photo).")] = None,
    repeats: Annotated[int, typer.Option(help="Warm repetitions per stage.")] = 10,
    people: Annotated[str, typer.Option(help="People counts for the decode sweep.")] = "1,5,15,30",
    batches: Annotated[str, typer.Option(help="Batch sizes for the network throughput sweep.")] = "1,8",
    variant: VariantOpt = None,
    size: Annotated[int | None, typer.Option(help="Square side for the precision rows (default: input size).")] = None,
    json_out: JsonOpt = None,
) -> None:
    """Per-stage p50/p90/p99 for each backend given (host aggregation share included), decode vs people;
    with --variant, the network latency of each precision against --onnx, interleaved in one run."""
    check_output_file("--json", json_out)  # before any work
    from hhrnet.benchmarks.common import write_rows
    from hhrnet.benchmarks.latency import LATENCY_TABLES, run_latency
    from hhrnet.cli.common import open_model
    from hhrnet.errors import ConfigError
    from hhrnet.export.parity import sample_images
    from hhrnet.images import read_image

    if checkpoint is None and onnx is None:
        raise ConfigError("give --checkpoint and/or --onnx to time")
    if variant and onnx is None:
        raise ConfigError("--variant files are timed against --onnx: give the fp32 export as --onnx")
    img = read_image(image) if image is not None else sample_images(None, 1)[0]
    status = Console(stderr=True, soft_wrap=True)
    loaded = [open_model(config=config, set_=set_, checkpoint=checkpoint)] if checkpoint is not None else []
    loaded += [open_model(config=config, set_=set_, onnx=onnx)] if onnx is not None else []
    others = [(v, open_model(config=config, set_=set_, onnx=v)) for v in variant or []]
    variants = [(onnx, loaded[-1]), *others] if others and onnx is not None else []  # the fp32 file first
    rows = run_latency(
        loaded,
        img,
        people=_ints(people),
        batches=_ints(batches),
        repeats=repeats,
        variants=variants,
        size=size,
        log=lambda line: status.print(line, highlight=False),
    )
    for bench, columns, title in LATENCY_TABLES:
        chosen = [r for r in rows if r["benchmark"] == bench]
        if chosen:
            print_table(chosen, columns, title.format(cpu_flags=chosen[-1].get("cpu_flags", "")))
    if json_out is not None:
        write_rows(json_out, rows)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(","))


@bench_app.command("peak")
def peak(
    onnx: Annotated[
        list[Path] | None,
        typer.Option(
            "--onnx",
            exists=True,
            dir_okay=False,
            help="Exported network(s) to measure against the peak of their precision (repeatable).",
        ),
    ] = None,
    size: Annotated[int, typer.Option(help="Network input side (1x3xSIZExSIZE).")] = 512,
    repeats: Annotated[int, typer.Option(help="Timed runs per probe (networks: half, at least 3).")] = 10,
    threads: Annotated[int, typer.Option(help="ONNX Runtime intra-op threads (0: its default, all cores).")] = 0,
    profile: Annotated[
        bool, typer.Option(help="Also each network's time per op type (ONNX Runtime profiler).")
    ] = False,
    json_out: JsonOpt = None,
) -> None:
    """This CPU's achievable fp32 and int8 multiply-add rates in ONNX Runtime (large Conv / GEMM probes), and
    each --onnx network's rate (its Conv/MatMul multiply-adds over its median time) as a fraction of them."""
    import onnx as onnx_mod

    from hhrnet.benchmarks.common import write_rows
    from hhrnet.benchmarks.peak import COLUMNS, op_profile, run
    from hhrnet.errors import InputError
    from hhrnet.runtime.artifact import Artifact

    if size < 32 or repeats < 1 or threads < 0:
        raise InputError(f"--size must be >= 32, --repeats >= 1 and --threads >= 0; got {size}, {repeats}, {threads}")
    nets = []
    for path in onnx or []:
        meta = {p.key: p.value for p in onnx_mod.load(str(path), load_external_data=False).metadata_props}
        nets.append((path.name, Artifact.from_metadata(meta, str(path)).precision, str(path)))
    Console(stderr=True, soft_wrap=True).print(
        f"timing the fp32 and int8 probes{' and the networks' if nets else ''} ..."
    )
    rows = run(nets, size, repeats, threads)
    print_table(rows, list(COLUMNS), f"multiply-add rate vs this CPU's peak in ONNX Runtime ({rows[0]['cpu_flags']})")
    for name, _, net_path in nets if profile else []:
        ops = op_profile(net_path, size, threads=threads)
        print_table(ops, ["name", "ms_per_run", "share"], f"{name}: time per op type (ONNX Runtime profiler)")
        rows += ops
    if json_out is not None:
        write_rows(json_out, rows)


@bench_app.command("throughput")
def throughput(
    checkpoint: CheckpointOpt = None,
    onnx: OnnxOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    images: Annotated[Path | None, typer.Option(help="Photo folder (default: the COCO sample photos).")] = None,
    max_images: Annotated[int | None, typer.Option(help="First N photos only.")] = None,
    rounds: Annotated[int, typer.Option(help="Sequential + overlapped passes (median).")] = 2,
    depth: Annotated[int, typer.Option(help="Items waiting between two overlapped stages, at most.")] = 2,
    official: Annotated[
        bool, typer.Option(help="Also the official pipeline: torch fp32 --checkpoint + the official parse port.")
    ] = True,
    predict: Annotated[
        bool, typer.Option(help="Also `hhrnet predict` itself on the photos and a video, --sequential vs overlapped.")
    ] = True,
    video: Annotated[
        Path | None, typer.Option(help="Video for the predict rows (default: one made from the photos, 2 frames each).")
    ] = None,
    json_out: JsonOpt = None,
) -> None:
    """Images/s image -> poses over a photo folder: stages one after another vs overlapped (read/preprocess,
    network, decode on their own threads), same run; with --checkpoint also the official pipeline, so the
    whole speed-up is one number. The model timed is --onnx if given, else --checkpoint."""
    from hhrnet import samples
    from hhrnet.benchmarks.common import write_rows
    from hhrnet.benchmarks.throughput import COLUMNS, photos, run
    from hhrnet.cli.common import open_model
    from hhrnet.errors import ConfigError, InputError

    if checkpoint is None and onnx is None:
        raise ConfigError("give --onnx and/or --checkpoint to time")
    if rounds < 1 or depth < 1 or (max_images is not None and max_images < 1):
        raise InputError(f"--rounds, --depth and --max-images must be >= 1; got {rounds}, {depth}, {max_images}")
    paths = photos(images if images is not None else samples.folder("coco"), max_images)
    ours = open_model(config=config, set_=set_, onnx=onnx) if onnx is not None else None
    torch_model = open_model(config=config, set_=set_, checkpoint=checkpoint) if checkpoint is not None else None
    model = ours or torch_model
    assert model is not None
    label = f"{model.backend} {model.precision} {model.graph}"
    reference = torch_model.predictor() if (official and torch_model is not None) else None
    Console(stderr=True, soft_wrap=True).print(
        f"timing {label} on {len(paths)} photos, sequential vs overlapped"
        + (" and the official pipeline ..." if reference else " ...")
    )
    rows = run(model.predictor(), paths, reference, rounds=rounds, depth=depth, label=label)
    if predict:
        import tempfile

        from hhrnet.benchmarks.throughput import make_video, predict_rows

        official_s = next((r["s_per_image"] for r in rows if r["pipeline"] == "official"), None)
        with tempfile.TemporaryDirectory(prefix="hhrnet-throughput-") as work:
            clip = video if video is not None else make_video(paths, Path(work) / "photos.avi")
            rows += predict_rows(
                model.predictor(),
                paths,
                clip,
                Path(work),
                rounds=rounds,
                depth=depth,
                label=label,
                official_s_per_image=official_s,
            )
    print_table(rows, list(COLUMNS), f"image -> poses throughput ({len(paths)} photos; same: overlapped = sequential)")
    if json_out is not None:
        write_rows(json_out, rows)


@bench_app.command("int8-spread")
def int8_spread(
    onnx: Annotated[Path, typer.Option(help="The fp32 ONNX export to quantize.")],
    calib_images: Annotated[Path, typer.Option(help="Folder split, in name order, into disjoint subsets.")],
    images: Annotated[Path, typer.Option(help="Evaluation image folder.")],
    annotations: Annotated[Path, typer.Option(help="Ground truth json of --images.")],
    subsets: Annotated[int, typer.Option(help="Calibration subsets (one int8 file each).")] = 4,
    calib_count: Annotated[int, typer.Option(help="Calibration images per subset (at most its size).")] = 64,
    int8_target: Annotated[Int8Target, typer.Option(help="tensorrt or cpu form.")] = "tensorrt",
    guard: Annotated[bool, typer.Option("--guard/--no-guard", help="Guarded export (default) or heads kept.")] = True,
    max_ap_drop: Annotated[float, typer.Option(help="The guard's budget (AP points).")] = 0.5,
    max_images: Annotated[int | None, typer.Option(help="First N evaluation images only.")] = None,
    json_out: JsonOpt = None,
) -> None:
    """Spread of int8 ΔAP (vs the fp32 file) over disjoint calibration subsets: how far to trust one number."""
    import tempfile

    from hhrnet.benchmarks.common import write_rows
    from hhrnet.benchmarks.parity import calibration_spread

    with tempfile.TemporaryDirectory(prefix="hhrnet-spread-") as work:
        rows = calibration_spread(
            onnx,
            calib_images,
            images,
            annotations,
            subsets=subsets,
            count=calib_count,
            max_images=max_images,
            work=work,
            target=int8_target,
            guarded=guard,
            max_ap_drop=max_ap_drop,
        )
    print_table(
        rows[:-1],
        ["variant", "AP", "delta_AP_points", "agreement_AP", "kept_fp32", "guard_loss"],
        "int8 over calibration subsets",
    )
    s = rows[-1]
    typer.echo(
        f"{s['variant']}: ΔAP {s['delta_AP_min']:+.2f} .. {s['delta_AP_max']:+.2f} points, "
        f"std {s['delta_AP_std']:.2f} ({s['images']} images)"
    )
    if json_out is not None:
        write_rows(json_out, rows)


@bench_app.command("parity")
def parity(
    checkpoint: Annotated[Path, typer.Option(help="Model to evaluate (hhrnet or official + --config).")],
    images: Annotated[Path, typer.Option(help="Image folder.")],
    annotations: Annotated[Path, typer.Option(help="Ground truth json.")],
    onnx: OnnxOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    max_images: Annotated[int | None, typer.Option(help="First N images only.")] = None,
    variant: VariantOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """ΔAP and agreement AP of every backend x decoder against PyTorch fp32 + the reference decoder; gated.
    Each --variant file (fp16 / int8 export) is gated by its precision's limit."""
    check_output_file("--json", json_out)  # before any work
    import os

    from numba import cuda

    from hhrnet.benchmarks.common import write_rows
    from hhrnet.benchmarks.parity import Variant, precision_info, run
    from hhrnet.benchmarks.report import OPTIONAL
    from hhrnet.cli.common import open_model

    base = open_model(config=config, set_=set_, checkpoint=checkpoint)
    variants = [
        Variant("torch fp32 + reference", base.network, "reference", "exact"),
        Variant("torch fp32 + fast", base.network, "fast", "exact"),
    ]
    for path in ([onnx] if onnx is not None else []) + list(variant or []):
        art = open_model(config=config, set_=set_, onnx=path)
        variants.append(
            Variant(
                f"onnxruntime {art.precision} {art.graph} + fast ({path.name})",
                art.network,
                "fast",
                art.precision,
                precision_info(art.artifact),
            )
        )
    if cuda.is_available() and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        variants.append(Variant("torch fp32 + cuda", base.network, "cuda", "exact"))
    Console(stderr=True, soft_wrap=True).print(f"scoring {len(variants)} variants on {images} ...")
    rows = run(variants, base.codec, images, annotations, max_images=max_images)
    extra = [c for c in OPTIONAL["parity"] if any(c in r for r in rows)]
    print_table(rows, ["variant", "AP", "delta_AP_points", "agreement_AP", "gate", "passed", *extra], "AP parity")
    passed = all(r["passed"] for r in rows)
    typer.echo(f"parity: {'PASS' if passed else 'FAIL'} ({sum(r['passed'] for r in rows)}/{len(rows)} within gates)")
    if json_out is not None:
        write_rows(json_out, rows)
    if not passed:
        raise typer.Exit(1)


@bench_app.command("gate")
def gate(
    compare: CompareOpt = None,
    max_regression: RegressionOpt = "50%",
    attempts: Annotated[int, typer.Option(help="Runs of a suite with a failing case, at most (best counts).")] = 3,
    update: Annotated[bool, typer.Option(help="Store the per-case median of --runs runs as the baseline.")] = False,
    runs: Annotated[int, typer.Option(help="Runs whose median --update stores.")] = 3,
) -> None:
    """CI gate: fast paths identical to their references, same-run speedups within --max-regression.
    A suite with a failing case is measured again (up to --attempts runs); a real regression fails every run."""
    from hhrnet.benchmarks import gate as gate_mod

    argv = ["--max-regression", max_regression, "--attempts", str(attempts), "--runs", str(runs)]
    if compare is not None:
        argv += ["--baseline", str(compare)]
    if update:
        argv.append("--update")
    code = gate_mod.main(argv)
    typer.echo(f"gate: {'PASS' if code == 0 else 'FAIL'}")
    if code:
        raise typer.Exit(code)


@bench_app.command("serve")
def serve(
    onnx: Annotated[Path, typer.Option(help="Exported ONNX model (aggregate or peaks graph) to serve.")],
    images: Annotated[Path | None, typer.Option(help="Image folder (default: the COCO sample photos).")] = None,
    concurrency: Annotated[str, typer.Option(help="Client concurrencies to measure.")] = "1,4,16",
    requests: Annotated[int, typer.Option(help="Images per measurement.")] = 64,
    protocol: Annotated[str, typer.Option(help="http or grpc.")] = "http",
    instances: Annotated[int, typer.Option(help="Instances of each served model.")] = 2,
    max_batch: Annotated[int, typer.Option(help="Largest network batch.")] = 8,
    batch_window_us: Annotated[int, typer.Option(help="Dynamic batching window (µs).")] = 2000,
    letterbox: Annotated[int | None, typer.Option(help="Input square (default: the export's input size).")] = None,
    json_out: JsonOpt = None,
) -> None:
    """Images/s and p50/p99 latency through a real Triton server vs in-process predict, same images, same run."""
    check_output_file("--json", json_out)  # before any work
    from hhrnet.benchmarks.common import write_rows
    from hhrnet.benchmarks.serve import run
    from hhrnet.predict import collect_sources

    files = collect_sources(images) if images is not None else None
    Console(stderr=True).print(f"timing in-process predict and Triton ({protocol}) on {onnx} ...")
    rows = run(
        onnx,
        files,
        concurrency=tuple(int(c) for c in concurrency.split(",")),
        requests=requests,
        protocol=protocol,
        instances=instances,
        max_batch=max_batch,
        window_us=batch_window_us,
        letterbox=letterbox,
    )
    print_table(
        rows,
        [
            "path",
            "concurrency",
            "images",
            "images_per_s",
            "p50_ms",
            "p99_ms",
            "mean_network_batch",
            "speedup_vs_in_process",
        ],
        f"serving ({rows[0]['input']} letterbox)",
    )
    if json_out is not None:
        write_rows(json_out, rows)
