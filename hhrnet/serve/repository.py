"""A Triton model repository from an exported artifact (``hhrnet export --format triton``).

Layout (model names are fixed; the public model is ``hhrnet``)::

    OUT/
      hhrnet/             ensemble: preprocess -> network -> decode; contract.json (codec, artifact, options)
      hhrnet_preprocess/  Python backend: bytes -> letterboxed input + image size   (1/model.py)
      hhrnet_network/     ONNX Runtime (1/model.onnx), TensorRT (1/model.plan + sidecar) or Python backend
      hhrnet_decode/      Python backend: maps + image size -> poses in image pixels (1/model.py)

Every ``config.pbtxt`` takes its tensor names, shapes and dtypes from the artifact's contract: the input
square is the served codec's letterbox (:func:`~hhrnet.serve.pipeline.served_codec`), the outputs are the
graph's (``heatmaps (J, S, S)``, ``tags (J, S, S, T)``, plus the peaks of a ``peaks`` graph), and the Python
models carry the served codec JSON as a parameter. An ONNX source is run once at (1, 3, S, S) to prove the
declared output shapes. Each config is written through Triton's ``ModelConfig`` schema (tritonclient's
``model_config_pb2`` and protobuf's text format). The repository is assembled in a staging folder and renamed
into place.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hhrnet.choices import NETWORK_BACKENDS
from hhrnet.codec import Codec
from hhrnet.deps import install_hint
from hhrnet.errors import BackendError, ConfigError
from hhrnet.graphs import graph_kind
from hhrnet.io import read_json
from hhrnet.runtime.artifact import Artifact
from hhrnet.serve.pipeline import ImageLimits, ServedPipeline, served_codec

ENSEMBLE = "hhrnet"
PREPROCESS = "hhrnet_preprocess"
NETWORK = "hhrnet_network"
DECODE = "hhrnet_decode"
MODELS = (ENSEMBLE, PREPROCESS, NETWORK, DECODE)
DEVICES = ("gpu", "cpu")

_TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int64": "TYPE_INT64", "int32": "TYPE_INT32"}
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
}
_MODEL_PY = '''"""Triton Python-backend model {name}: written by hhrnet export --format triton (hhrnet {version})."""

from hhrnet.serve.backend import {cls} as TritonPythonModel  # noqa: F401
'''


@dataclass(frozen=True)
class ServeOptions:
    """How the repository batches and places its models."""

    max_batch_size: int = 8  # images per network call (and per request)
    max_queue_delay_us: int = 2000  # dynamic batching window
    instances: int = 1  # instances of each model
    device: str = "gpu"  # network instances on the GPU (ONNX Runtime / TensorRT backends) or the CPU
    threads: int = 0  # ONNX Runtime threads of a Python-backend network (0: its default)
    limits: ImageLimits = field(default_factory=ImageLimits)

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch_size <= 1024:
            raise ConfigError(f"max batch size must be 1..1024, got {self.max_batch_size}")
        if self.max_queue_delay_us < 0:
            raise ConfigError(f"batching window must be >= 0 microseconds, got {self.max_queue_delay_us}")
        if not 1 <= self.instances <= 64:
            raise ConfigError(f"instances must be 1..64, got {self.instances}")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be gpu or cpu, got {self.device!r}")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0, got {self.threads}")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy name: float32, int64, ...
    dims: tuple[int, ...]  # without the batch axis; -1 = variable

    @property
    def triton_dtype(self) -> str:
        if self.dtype == "bytes":
            return "TYPE_STRING"
        return _TRITON_DTYPES[self.dtype]


@dataclass
class Repository:
    """A written repository: where it is and what it serves."""

    path: Path
    codec: Codec  # the served (letterboxed) codec
    artifact: Artifact
    network_backend: str
    options: ServeOptions
    network_inputs: list[TensorSpec]
    network_outputs: list[TensorSpec]

    def config_path(self, model: str) -> Path:
        return self.path / model / "config.pbtxt"


# --------------------------------------------------------------------------------------------
# text format
# --------------------------------------------------------------------------------------------


def pbtxt(config: dict[str, Any]) -> str:
    """A model config (the JSON form of Triton's ``ModelConfig``) as protobuf text format, through Triton's own
    schema: a misspelt field, a wrong type or an unknown enum value is a ConfigError here, not a server that
    refuses the model later."""
    try:
        from google.protobuf import json_format, text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        hint = install_hint("triton")
        raise BackendError(f"writing a Triton repository needs Triton's model-config schema: {hint}") from None
    try:
        message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    except json_format.ParseError as exc:
        raise ConfigError(f"invalid Triton model config for {config.get('name', '?')!r}: {exc}") from None
    return str(text_format.MessageToString(message))


def _tensors(specs: Sequence[TensorSpec]) -> list[dict[str, Any]]:
    return [{"name": s.name, "data_type": s.triton_dtype, "dims": list(s.dims)} for s in specs]


def _params(values: dict[str, str]) -> dict[str, Any]:
    return {k: {"string_value": v} for k, v in values.items()}


# --------------------------------------------------------------------------------------------
# the network's tensors, from the contract
# --------------------------------------------------------------------------------------------


def network_outputs(codec: Codec, graph: str) -> list[TensorSpec]:
    """The graph's outputs (no batch axis) for the served codec's square input."""
    m = ServedPipeline(codec, graph).map_side
    j, t = codec.num_joints, codec.tag_dims
    specs = [TensorSpec("heatmaps", "float32", (j, m, m)), TensorSpec("tags", "float32", (codec.tag_channels, m, m, t))]
    if graph_kind(graph).peaks:
        k = codec.decode.max_num_people
        specs += [
            TensorSpec("peak_vals", "float32", (j, k)),
            TensorSpec("peak_index", "int64", (j, k)),
            TensorSpec("peak_tags", "float32", (j, k, t)),
        ]
    return specs


def _check_onnx(path: Path, codec: Codec, expected: list[TensorSpec]) -> str:
    """Run the ONNX file once at (1, 3, S, S); the input name. BackendError when it disagrees with the contract."""
    from hhrnet.runtime.ort import OrtSession

    session = OrtSession(path, threads=1)
    declared = session.session.get_inputs()[0]
    batch = declared.shape[0]
    if isinstance(batch, int) and batch != -1:
        raise ConfigError(
            f"{path} has a fixed batch of {batch}: Triton batches across requests; re-export with --dynamic"
        )
    side = codec.letterbox
    outs = session(np.zeros((1, 3, side, side), np.float32))
    types = {o.name: _ORT_DTYPES.get(o.type, o.type) for o in session.session.get_outputs()}
    for spec, out in zip(expected, outs, strict=True):
        if out.shape[1:] != spec.dims or types[spec.name] != spec.dtype:
            raise BackendError(
                f"{path}: output {spec.name} is {types[spec.name]} {out.shape[1:]} at {side}x{side}, but the contract "
                f"says {spec.dtype} {spec.dims}"
            )
    return str(declared.name)


def _check_engine(
    meta: dict[str, Any], served: Artifact, max_batch: int, path: Path, server_tensorrt: str | None
) -> None:
    """ConfigError unless the plan's profiles cover what Triton sends (batches 1..``max_batch`` of the letterbox
    square: :func:`hhrnet.runtime.tensorrt.default_profiles` of the served contract, the one place that decides)
    and, when the server's TensorRT is declared, the plan was built with that TensorRT (a plan only loads in
    the TensorRT version that built it)."""
    from hhrnet.runtime.tensorrt import Profile, default_profiles

    built = str(meta.get("tensorrt", ""))
    if server_tensorrt is not None and not _same_tensorrt(built, server_tensorrt):
        raise ConfigError(
            f"{path} was built with TensorRT {built or 'unknown'}, but the server runs TensorRT {server_tensorrt}: "
            "rebuild it with that TensorRT (hhrnet export --format engine on the serving machine's version)"
        )
    (need,) = default_profiles(served, max_batch)
    for p in meta.get("profiles", []):
        have = Profile(tuple(p["min"]), tuple(p.get("opt", p["min"])), tuple(p["max"]))  # type: ignore[arg-type]
        if have.contains(need.min) and have.contains(need.max):
            return
    raise ConfigError(
        f"{path}'s optimisation profiles do not cover batches 1..{max_batch} of {need.max[2]}x{need.max[3]}: rebuild "
        f"it with --profile {need.text()}"
    )


def _same_tensorrt(built: str, server: str) -> bool:
    """Whether a plan built by TensorRT ``built`` (e.g. 10.13.0.35) matches the declared ``server`` version: every
    component the declaration gives must agree, and it must give at least major.minor.patch."""
    want = server.strip().split(".")
    if len(want) < 3 or not all(w.isdigit() for w in want):
        raise ConfigError(f"give the server's TensorRT as MAJOR.MINOR.PATCH[.BUILD], got {server!r}")
    return built.split(".")[: len(want)] == want


# --------------------------------------------------------------------------------------------
# the four configs
# --------------------------------------------------------------------------------------------


def _batching(options: ServeOptions) -> dict[str, Any]:
    return {"max_queue_delay_microseconds": options.max_queue_delay_us}


def _instances(options: ServeOptions, kind: str) -> list[dict[str, Any]]:
    return [{"count": options.instances, "kind": f"KIND_{kind.upper()}"}]


def preprocess_config(codec: Codec, graph: str, options: ServeOptions) -> dict[str, Any]:
    side = codec.letterbox
    return {
        "name": PREPROCESS,
        "backend": "python",
        "max_batch_size": options.max_batch_size,
        "input": _tensors([TensorSpec("image", "bytes", (1,))]),
        "output": _tensors([TensorSpec("input", "float32", (3, side, side)), TensorSpec("image_size", "int32", (2,))]),
        "dynamic_batching": _batching(options),
        "instance_group": _instances(options, "cpu"),
        "parameters": _params(
            {
                "hhrnet.codec": codec.to_json(),
                "hhrnet.graph": graph,
                "max_image_bytes": str(options.limits.max_bytes),
                "max_image_pixels": str(options.limits.max_pixels),
            }
        ),
    }


def network_config(
    backend: str, inputs: list[TensorSpec], outputs: list[TensorSpec], options: ServeOptions, filename: str
) -> dict[str, Any]:
    config: dict[str, Any] = {"name": NETWORK}
    if backend == "onnxruntime":
        config |= {"platform": "onnxruntime_onnx", "default_model_filename": filename}
    elif backend == "tensorrt":
        config |= {"platform": "tensorrt_plan", "default_model_filename": filename}
    else:
        config |= {"backend": "python"}
    config |= {
        "max_batch_size": options.max_batch_size,
        "input": _tensors(inputs),
        "output": _tensors(outputs),
        "dynamic_batching": _batching(options),
        "instance_group": _instances(options, options.device),
    }
    if backend == "python":
        config["parameters"] = _params({"hhrnet.network_file": filename, "threads": str(options.threads)})
    return config


def decode_config(codec: Codec, graph: str, outputs: list[TensorSpec], options: ServeOptions) -> dict[str, Any]:
    j = codec.decoded_joints
    return {
        "name": DECODE,
        "backend": "python",
        "max_batch_size": options.max_batch_size,
        "input": _tensors([*outputs, TensorSpec("image_size", "int32", (2,))]),
        "output": _tensors(
            [
                TensorSpec("keypoints", "float32", (-1, j, 3)),
                TensorSpec("scores", "float32", (-1,)),
                TensorSpec("people", "int32", (1,)),
            ]
        ),
        "dynamic_batching": _batching(options),
        "instance_group": _instances(options, "cpu"),
        "parameters": _params({"hhrnet.codec": codec.to_json(), "hhrnet.graph": graph}),
    }


def ensemble_config(codec: Codec, input_name: str, outputs: list[TensorSpec], options: ServeOptions) -> dict[str, Any]:
    import hhrnet

    j = codec.decoded_joints
    names = {s.name: s.name for s in outputs}
    steps = [
        {
            "model_name": PREPROCESS,
            "model_version": -1,
            "input_map": {"image": "image"},
            "output_map": {"input": "preprocessed", "image_size": "image_size"},
        },
        {"model_name": NETWORK, "model_version": -1, "input_map": {input_name: "preprocessed"}, "output_map": names},
        {
            "model_name": DECODE,
            "model_version": -1,
            "input_map": {**names, "image_size": "image_size"},
            "output_map": {"keypoints": "keypoints", "scores": "scores", "people": "people"},
        },
    ]
    return {
        "name": ENSEMBLE,
        "platform": "ensemble",
        "max_batch_size": options.max_batch_size,
        "input": _tensors([TensorSpec("image", "bytes", (1,))]),
        "output": _tensors(
            [
                TensorSpec("keypoints", "float32", (-1, j, 3)),
                TensorSpec("scores", "float32", (-1,)),
                TensorSpec("people", "int32", (1,)),
            ]
        ),
        "ensemble_scheduling": {"step": steps},
        "parameters": _params({"hhrnet.codec": codec.to_json(), "hhrnet.version": hhrnet.__version__}),
    }


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _source(onnx: Path | None, engine: Path | None) -> tuple[Artifact, dict[str, Any] | None]:
    if (onnx is None) == (engine is None):
        raise ConfigError("give one network for the repository: an ONNX file or a TensorRT engine")
    if engine is not None:
        from hhrnet.runtime.tensorrt import engine_contract, read_sidecar

        if not Path(engine).is_file():
            raise BackendError(f"engine not found: {engine}")
        meta = read_sidecar(engine)  # a missing or unreadable sidecar is an error naming it
        return engine_contract(engine, meta), meta
    from hhrnet.runtime.ort import OrtSession

    return OrtSession(onnx, threads=1).artifact, None  # type: ignore[arg-type]


def write_repository(
    out: str | Path,
    *,
    onnx: str | Path | None = None,
    engine: str | Path | None = None,
    network_backend: str | None = None,
    letterbox: int | None = None,
    options: ServeOptions | None = None,
    overwrite: bool = False,
    server_tensorrt: str | None = None,
) -> Repository:
    """Write the repository for an ONNX file or a TensorRT engine; ``network_backend`` defaults by source.

    ``server_tensorrt``: the TensorRT version of the Triton that will serve an engine (its release notes name
    it); the engine must have been built with it. The engine's version is recorded in ``contract.json``.

    ``python`` runs the network inside Triton's Python backend with hhrnet's own runtime (for Triton builds
    without the ONNX Runtime / TensorRT backends, such as PyTriton's bundled server).
    """
    import hhrnet
    from hhrnet.io import atomic_write_text

    options = options or ServeOptions()
    onnx_path = Path(onnx) if onnx is not None else None
    engine_path = Path(engine) if engine is not None else None
    artifact, engine_meta = _source(onnx_path, engine_path)
    backend = network_backend or ("tensorrt" if engine_path is not None else "onnxruntime")
    if backend not in NETWORK_BACKENDS:
        raise ConfigError(f"network backend must be one of {', '.join(NETWORK_BACKENDS)}, got {backend!r}")
    if backend == "tensorrt" and engine_path is None:
        raise ConfigError("the tensorrt network backend needs an engine (hhrnet export --format engine)")
    if backend == "onnxruntime" and onnx_path is None:
        raise ConfigError("the onnxruntime network backend needs an ONNX file")
    codec = served_codec(artifact.codec, artifact.static_hw, letterbox)
    served = artifact.with_codec(codec)  # checks the served codec against what the graph bakes in
    outputs = network_outputs(codec, artifact.graph)
    if onnx_path is not None:
        input_name = _check_onnx(onnx_path, codec, outputs)
        filename = "model.onnx"
    else:
        assert engine_path is not None and engine_meta is not None
        _check_engine(engine_meta, served, options.max_batch_size, engine_path, server_tensorrt)
        input_name, filename = "image", "model.plan"
    inputs = [TensorSpec(input_name, "float32", (3, codec.letterbox, codec.letterbox))]

    dest = Path(out)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not overwrite:
        raise ConfigError(f"{dest} exists and is not empty: remove it or choose another folder")
    configs = {
        ENSEMBLE: ensemble_config(codec, input_name, outputs, options),
        PREPROCESS: preprocess_config(codec, artifact.graph, options),
        NETWORK: network_config(backend, inputs, outputs, options, filename),
        DECODE: decode_config(codec, artifact.graph, outputs, options),
    }
    texts = {name: pbtxt(config) for name, config in configs.items()}  # checked by the schema before any write
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for name, text in texts.items():
            (stage / name / "1").mkdir(parents=True)
            atomic_write_text(stage / name / "config.pbtxt", text)
        for name, cls in ((PREPROCESS, "PreprocessModel"), (DECODE, "DecodeModel")) + (
            ((NETWORK, "NetworkModel"),) if backend == "python" else ()
        ):
            atomic_write_text(
                stage / name / "1" / "model.py", _MODEL_PY.format(name=name, version=hhrnet.__version__, cls=cls)
            )
        if engine_path is not None:
            from hhrnet.runtime.tensorrt import sidecar

            shutil.copyfile(engine_path, stage / NETWORK / "1" / filename)
            shutil.copyfile(sidecar(engine_path), sidecar(stage / NETWORK / "1" / filename))
        else:
            assert onnx_path is not None
            shutil.copyfile(onnx_path, stage / NETWORK / "1" / filename)
        contract = {
            "served_codec": json.loads(codec.to_json()),
            "artifact": served.metadata(),
            "network_backend": backend,
            "options": asdict(options),
            "hhrnet_version": hhrnet.__version__,
            "source": str(onnx_path or engine_path),
            "tensorrt": engine_meta.get("tensorrt") if engine_meta else None,
        }
        atomic_write_text(stage / ENSEMBLE / "contract.json", json.dumps(contract, indent=1, sort_keys=True))
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            dest.rename(old)
            stage.rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            stage.rename(dest)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return Repository(dest, codec, served, backend, options, inputs, outputs)


def read_contract(path: str | Path) -> dict[str, Any]:
    """``contract.json`` of a written repository (served codec, artifact metadata, options)."""
    p = Path(path) / ENSEMBLE / "contract.json"
    data = read_json(p, ConfigError, f"{path} is not an hhrnet Triton repository (no {ENSEMBLE}/contract.json)")
    if not isinstance(data, dict):
        raise ConfigError(f"{p} is not a JSON object")
    return data
