"""Triton Python-backend models of the served pipeline (see :mod:`hhrnet.serve`).

Each ``model.py`` the repository writer emits is one line, ``from hhrnet.serve.backend import X as
TritonPythonModel``, so the code Triton runs is this module's, installed with hhrnet (no torch needed:
``pip install --no-deps .`` in an hhrnet checkout, plus numpy, numba, opencv-python-headless and onnxruntime).

Everything a model needs comes from its ``config.pbtxt`` parameters (``hhrnet.codec``: the served codec
JSON, ``hhrnet.graph``, image limits, the network file), so a repository runs without anything beside it.
A request that cannot be served (corrupt, truncated, far too large image; non-finite maps) gets an error
response naming the problem; the other requests of the same batch are answered normally.

``triton_python_backend_utils`` exists only inside Triton's Python-backend stub; it is imported in
``initialize``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hhrnet.codec import Codec
from hhrnet.errors import ConfigError, HHRNetError
from hhrnet.serve.pipeline import ImageLimits, ServedPipeline, decode_request_image, pad_poses

PREPROCESS_OUTPUTS = ("input", "image_size")
DECODE_OUTPUTS = ("keypoints", "scores", "people")


def _pb_utils() -> Any:
    import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]

    return pb_utils


def parameters(model_config: dict[str, Any]) -> dict[str, str]:
    """The string parameters of a model config (as Triton passes it to ``initialize``)."""
    raw = model_config.get("parameters") or {}
    return {k: str(v.get("string_value", "")) for k, v in raw.items()}


def _param(params: dict[str, str], key: str, model: str) -> str:
    if key not in params:
        raise ConfigError(
            f"{model}: config.pbtxt lacks parameter {key!r}; regenerate with hhrnet export --format triton"
        )
    return params[key]


def _error_response(pb: Any, message: str) -> Any:
    return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(message))


class _Model:
    """Shared ``initialize``: the model config, its parameters and pb_utils."""

    name = "hhrnet"

    def initialize(self, args: dict[str, Any]) -> None:
        self.pb = _pb_utils()
        self.config = json.loads(args["model_config"])
        self.name = str(self.config.get("name", self.name))
        self.params = parameters(self.config)
        self.model_dir = Path(args.get("model_repository", ".")) / str(args.get("model_version", "1"))
        self.setup()

    def setup(self) -> None:
        """Read what the model needs from ``self.params``."""

    def served_pipeline(self) -> ServedPipeline:
        """The pipeline the parameters describe (served codec JSON and graph)."""
        codec = Codec.from_json(_param(self.params, "hhrnet.codec", self.name), f"{self.name} config")
        return ServedPipeline(codec, _param(self.params, "hhrnet.graph", self.name))

    def finalize(self) -> None:
        """Nothing to release beyond what garbage collection frees."""


class PreprocessModel(_Model):
    """``image`` BYTES (B, 1) -> ``input`` (B, 3, S, S) f32, ``image_size`` (B, 2) int32 (width, height)."""

    def setup(self) -> None:
        self.pipeline = self.served_pipeline()
        self.limits = ImageLimits(
            int(_param(self.params, "max_image_bytes", self.name)),
            int(_param(self.params, "max_image_pixels", self.name)),
        )

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One request's encoded images (B, 1) object -> (inputs, sizes); InputError names the bad one."""
        flat = images.reshape(-1)
        inputs = np.empty((len(flat), 3, self.pipeline.side, self.pipeline.side), np.float32)
        sizes = np.empty((len(flat), 2), np.int32)
        for i, item in enumerate(flat):
            data = item.encode() if isinstance(item, str) else bytes(item)
            name = "image" if len(flat) == 1 else f"image {i} of {len(flat)}"
            image = decode_request_image(data, self.limits, name)
            inputs[i] = self.pipeline.prepare(image)
            sizes[i] = (image.shape[1], image.shape[0])
        return inputs, sizes

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self.pb
        responses = []
        for request in requests:
            try:
                inputs, sizes = self.run(pb.get_input_tensor_by_name(request, "image").as_numpy())
            except HHRNetError as exc:
                responses.append(_error_response(pb, str(exc)))
                continue
            responses.append(
                pb.InferenceResponse(output_tensors=[pb.Tensor("input", inputs), pb.Tensor("image_size", sizes)])
            )
        return responses


class NetworkModel(_Model):
    """The exported network under ONNX Runtime (or TensorRT) inside the Python backend.

    For Triton builds without the ONNX Runtime / TensorRT backends (PyTriton's bundled server). All the
    requests of a dynamic batch run as one network call.
    """

    def setup(self) -> None:
        from hhrnet.runtime.ort import open_session

        path = self.model_dir / _param(self.params, "hhrnet.network_file", self.name)
        threads = int(self.params.get("threads", "0")) or None
        kind = str(self.config.get("instance_group", [{}])[0].get("kind", "KIND_CPU"))
        self.session = open_session(path, device="cuda" if kind == "KIND_GPU" else "cpu", threads=threads)
        self.input_name = str(self.config["input"][0]["name"])
        self.outputs = [
            (o["name"], np.dtype(self.pb.triton_string_to_numpy(o["data_type"]))) for o in self.config["output"]
        ]
        if tuple(n for n, _ in self.outputs) != tuple(self.session.artifact.outputs):
            raise ConfigError(
                f"{self.name}: config outputs do not match {path.name}'s {self.session.artifact.graph} graph"
            )

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self.pb
        batches = [pb.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        try:
            outs = self.session(np.concatenate(batches, 0))
        except HHRNetError as exc:
            return [_error_response(pb, str(exc)) for _ in requests]
        responses, start = [], 0
        for batch in batches:
            stop = start + len(batch)
            tensors = [
                pb.Tensor(name, np.ascontiguousarray(out[start:stop], dtype))
                for (name, dtype), out in zip(self.outputs, outs, strict=True)
            ]
            responses.append(pb.InferenceResponse(output_tensors=tensors))
            start = stop
        return responses


class DecodeModel(_Model):
    """Network outputs (B, ...) + ``image_size`` (B, 2) -> ``keypoints`` (B, P, J, 3), ``scores`` (B, P),
    ``people`` (B, 1): the decoder and the inverse letterbox, per image."""

    def setup(self) -> None:
        self.pipeline = self.served_pipeline()
        self.inputs = [str(i["name"]) for i in self.config["input"] if i["name"] != "image_size"]
        from hhrnet.kernels.decode import warmup

        warmup()  # compile (or load from Numba's cache) before the model reports ready, not on a request

    def run(self, outputs: list[np.ndarray], sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        results = [self.pipeline.poses([o[i] for o in outputs], int(w), int(h)) for i, (w, h) in enumerate(sizes)]
        return pad_poses(results, self.pipeline.codec.decoded_joints)

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self.pb
        responses = []
        for request in requests:
            try:
                outputs = [pb.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs]
                sizes = pb.get_input_tensor_by_name(request, "image_size").as_numpy()
                keypoints, scores, people = self.run(outputs, sizes)
            except HHRNetError as exc:
                responses.append(_error_response(pb, str(exc)))
                continue
            responses.append(
                pb.InferenceResponse(
                    output_tensors=[
                        pb.Tensor("keypoints", keypoints),
                        pb.Tensor("scores", scores),
                        pb.Tensor("people", people),
                    ]
                )
            )
        return responses
