"""``hhrnet export``: an ONNX file carrying its contract, or a TensorRT engine built from one; then parity."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from hhrnet.choices import CalibMethod, Graph, Int8Target, NetworkBackend, Precision
from hhrnet.cli.common import CheckpointOpt, ConfigOpt, FlipOpt, LetterboxOpt, SetOpt, check_output_file

Format = Literal["onnx", "engine", "triton"]

FormatOpt = Annotated[
    Format,
    typer.Option(help="onnx; a TensorRT engine built from --onnx; or a Triton model repository (folder --out)."),
]
GraphOpt = Annotated[
    Graph,
    typer.Option(
        help="aggregate: flip, resize, averaging and projection in the graph (runtimes only decode); "
        "peaks: NMS + top-k too; raw: network outputs only."
    ),
]
OpsetOpt = Annotated[int, typer.Option(help="ONNX opset.")]
DynamicOpt = Annotated[
    bool, typer.Option("--dynamic/--static", help="Dynamic batch/height/width, or a fixed letterboxed square.")
]
DynamoOpt = Annotated[bool, typer.Option(help="Use the torch.export-based exporter.")]
OnnxOpt = Annotated[
    Path | None,
    typer.Option(help="ONNX input: for --format engine, or an fp32 export to convert to --precision."),
]
PrecisionOpt = Annotated[
    Precision | None,
    typer.Option(help="Precision in the ONNX graph (default fp32); an engine takes its ONNX file's."),
]
CalibImagesOpt = Annotated[
    Path | None, typer.Option(help="int8: folder of representative images (preprocessed by the codec).")
]
CalibMethodOpt = Annotated[CalibMethod, typer.Option(help="int8 activation range calibration.")]
CalibCountOpt = Annotated[int, typer.Option(help="int8: calibrate on the first N images (by name).")]
KeepOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="Node groups (stem, heads, deconv, aggregate) or node-name regexes left in fp32 (repeatable); "
        "default: none for fp16, heads for int8; none keeps nothing."
    ),
]
Int8TargetOpt = Annotated[
    Int8Target,
    typer.Option(help="tensorrt: int8 symmetric activations (TensorRT); cpu: uint8 (ONNX Runtime CPU kernels)."),
]
GuardOpt = Annotated[
    bool,
    typer.Option(
        "--guard/--no-guard",
        help="int8 without --keep: score everything quantized on held-out images and, over --max-ap-drop, keep in "
        "float (fp16 in the TensorRT form, fp32 in the CPU form) the fewest costly blocks that hold the loss within "
        "it; --no-guard keeps the heads (a fixed rule).",
    ),
]
MaxApDropOpt = Annotated[
    float, typer.Option(help="int8 guard: AP points the int8 file may lose against fp32 on held-out images.")
]
GuardImagesOpt = Annotated[
    Path | None,
    typer.Option(help="int8 guard: held-out images (default: the --calib-images calibration did not use)."),
]
GuardCountOpt = Annotated[int, typer.Option(help="int8 guard: score on the first N held-out images.")]
AnnotationsOpt = Annotated[
    Path | None,
    typer.Option(
        help="int8 guard: COCO keypoint file of the held-out images: the true ΔAP instead of the label-free "
        "estimate (AP at OKS 0.5 against fp32's confident poses)."
    ),
]
ProfileOpt = Annotated[
    list[str] | None,
    typer.Option(help="MIN:OPT:MAX shapes, each BxCxHxW (repeatable); default: from the ONNX file's codec."),
]
OutOpt = Annotated[Path | None, typer.Option(help="Output file.")]
SamplesOpt = Annotated[Path | None, typer.Option(help="Images for the parity check (default: the COCO samples).")]
EngineOpt = Annotated[Path | None, typer.Option(help="--format triton: serve this TensorRT engine.")]
NetworkBackendOpt = Annotated[
    NetworkBackend | None,
    typer.Option(
        help="--format triton: Triton backend of the network (default: tensorrt for --engine, "
        "else onnxruntime; python runs it in the Python backend, e.g. under hhrnet serve)."
    ),
]
MaxBatchOpt = Annotated[
    int | None,
    typer.Option(
        help="Largest batch of images a network call takes: --format engine sizes its profile for it "
        "(default 1; a raw graph with flip runs twice the rows), --format triton batches up to it "
        "(default 8)."
    ),
]
ServerTensorrtOpt = Annotated[
    str | None,
    typer.Option(
        help="--format triton with --engine: the serving Triton's TensorRT version (e.g. 10.13.0); "
        "the engine must have been built with it."
    ),
]
BatchWindowUsOpt = Annotated[int, typer.Option(help="--format triton: dynamic batching window (µs).")]
InstancesOpt = Annotated[int, typer.Option(help="--format triton: instances of each model.")]
TritonDeviceOpt = Annotated[str, typer.Option(help="--format triton: gpu or cpu instances for the network model.")]


def export(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    checkpoint: CheckpointOpt = None,
    format: FormatOpt = "onnx",
    graph: GraphOpt = "aggregate",
    opset: OpsetOpt = 17,
    dynamic: DynamicOpt = True,
    dynamo: DynamoOpt = False,
    flip: FlipOpt = None,
    letterbox: LetterboxOpt = None,
    onnx: OnnxOpt = None,
    precision: PrecisionOpt = None,
    calib_images: CalibImagesOpt = None,
    calib_method: CalibMethodOpt = "percentile",
    calib_count: CalibCountOpt = 64,
    keep: KeepOpt = None,
    int8_target: Int8TargetOpt = "tensorrt",
    guard: GuardOpt = True,
    max_ap_drop: MaxApDropOpt = 0.5,
    guard_images: GuardImagesOpt = None,
    guard_count: GuardCountOpt = 32,
    annotations: AnnotationsOpt = None,
    profile: ProfileOpt = None,
    out: OutOpt = None,
    samples: SamplesOpt = None,
    engine: EngineOpt = None,
    network_backend: NetworkBackendOpt = None,
    max_batch: MaxBatchOpt = None,
    server_tensorrt: ServerTensorrtOpt = None,
    batch_window_us: BatchWindowUsOpt = 2000,
    instances: InstancesOpt = 1,
    triton_device: TritonDeviceOpt = "gpu",
) -> None:
    """Export the model; prints ONNX Runtime vs PyTorch errors and whether decoded poses agree."""
    from rich.console import Console

    from hhrnet.export.workflow import Conversion, ExportRequest, Int8Guard, TritonOptions, run_export

    if format != "triton":
        check_output_file("--out", out)  # before any work: a bad --out must not cost an export
    guard_options = Int8Guard(guard, max_ap_drop, guard_images, guard_count, annotations)
    request = ExportRequest(  # one option per field: a table, not code to wrap
        format=format, checkpoint=checkpoint, onnx=onnx, engine=engine, config=config, overrides=set_ or [],
        graph=graph, opset=opset, dynamic=dynamic, dynamo=dynamo, flip=flip, letterbox=letterbox, profiles=profile,
        conversion=Conversion(precision, calib_images, calib_method, calib_count, keep, int8_target, guard_options),
        triton=TritonOptions(network_backend, max_batch or 8, batch_window_us, instances, triton_device,
                             server_tensorrt),
        max_batch=max_batch, out=out, samples=samples,
    )  # fmt: skip
    console = Console(soft_wrap=True)
    run_export(request, log=lambda line: console.print(line, highlight=False))
