"""Talking to a served hhrnet with ``tritonclient`` (HTTP or gRPC): encoded images in, poses out.

The public model takes ``image`` BYTES (B, 1) and answers ``keypoints (B, P, J, 3)``, ``scores (B, P)``
and ``people (B, 1)`` (:func:`~hhrnet.serve.pipeline.pad_poses`); :class:`PoseClient` hides the padding.
A request the server refuses raises :class:`~hhrnet.errors.BackendError` carrying the server's message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hhrnet.deps import install_hint
from hhrnet.errors import BackendError, ConfigError
from hhrnet.inference import Poses
from hhrnet.serve.pipeline import unpad_poses
from hhrnet.serve.repository import ENSEMBLE

PROTOCOLS = ("http", "grpc")
OUTPUTS = ("keypoints", "scores", "people")
# PyTriton's token headers for restricted endpoints (statistics, model control, ...), per protocol
ACCESS_HEADERS = {"http": "triton-access-token", "grpc": "triton-grpc-protocol-triton-access-token"}


def _module(protocol: str) -> Any:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be http or grpc, got {protocol!r}")
    try:
        if protocol == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module  # type: ignore[no-redef]
    except ImportError:
        raise BackendError(f"the Triton client needs tritonclient: {install_hint('serve')}") from None
    return module


def _message(exc: Exception) -> str:
    text = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
    return str(text or exc).strip()


class PoseClient:
    """One connection to a Triton server serving hhrnet; not thread-safe: one client per thread."""

    def __init__(
        self,
        url: str,
        protocol: str = "http",
        model: str = ENSEMBLE,
        timeout_s: float = 60.0,
        access_token: str | None = None,
    ) -> None:
        self.module = _module(protocol)
        self.protocol = protocol
        self.url = url
        self.model = model
        self.timeout_s = timeout_s
        self.headers = (
            {ACCESS_HEADERS[protocol]: access_token} if access_token else None
        )  # restricted endpoints (statistics)
        if protocol == "http":
            self.client = self.module.InferenceServerClient(
                url, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        else:
            self.client = self.module.InferenceServerClient(url)

    def infer_raw(
        self, inputs: Sequence[tuple[str, np.ndarray, str]], model: str | None = None
    ) -> dict[str, np.ndarray]:
        """Send named arrays as they are (name, array, Triton dtype): for requests of any shape or dtype."""
        tensors = []
        for name, array, dtype in inputs:
            t = self.module.InferInput(name, list(array.shape), dtype)
            t.set_data_from_numpy(array)
            tensors.append(t)
        target = model or self.model
        try:
            if self.protocol == "http":
                result = self.client.infer(target, tensors)
            else:
                result = self.client.infer(target, tensors, client_timeout=self.timeout_s)
        except Exception as exc:  # tritonclient raises InferenceServerException (and socket errors)
            raise BackendError(f"{target} at {self.url}: {_message(exc)}") from None
        out = {}
        for output in result.get_response()["outputs"] if self.protocol == "http" else result.get_response().outputs:
            name = output["name"] if self.protocol == "http" else output.name
            out[name] = result.as_numpy(name)
        return out

    def infer(self, images: Sequence[bytes]) -> list[Poses]:
        """Encoded images (JPEG, PNG, ...) -> their poses in image pixels, in one request."""
        if not images:
            return []
        data = np.empty((len(images), 1), np.object_)
        for i, b in enumerate(images):
            data[i, 0] = bytes(b)
        out = self.infer_raw([("image", data, "BYTES")])
        missing = [n for n in OUTPUTS if n not in out]
        if missing:
            raise BackendError(f"{self.model} at {self.url} did not return {', '.join(missing)}")
        return unpad_poses(out["keypoints"], out["scores"], out["people"])

    def infer_one(self, image: bytes) -> Poses:
        return self.infer([image])[0]

    def model_config(self, model: str | None = None) -> dict[str, Any]:
        target = model or self.model
        if self.protocol == "http":
            return dict(self.client.get_model_config(target))
        return dict(self.client.get_model_config(target, as_json=True)["config"])

    def served_codec(self) -> Any:
        """The codec the server runs (from the public model's parameters)."""
        from hhrnet.codec import Codec

        params = self.model_config().get("parameters", {})
        text = params.get("hhrnet.codec", {}).get("string_value")
        if not text:
            raise BackendError(f"{self.model} at {self.url} carries no hhrnet.codec parameter")
        return Codec.from_json(text, f"{self.model} at {self.url}")

    def statistics(self, model: str | None = None) -> dict[str, Any]:
        """Triton's inference statistics of ``model`` (all models when None) as JSON."""
        name = model or ""
        try:
            if self.protocol == "http":
                return dict(self.client.get_inference_statistics(name, headers=self.headers))
            return dict(self.client.get_inference_statistics(name, headers=self.headers, as_json=True))
        except Exception as exc:  # InferenceServerException, e.g. a missing access token
            raise BackendError(f"statistics from {self.url}: {_message(exc)}") from None

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> PoseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def batch_histogram(stats: dict[str, Any], model: str) -> dict[int, int]:
    """Batch size -> number of executions of ``model`` in Triton's statistics JSON (HTTP or gRPC form)."""
    for entry in stats.get("model_stats", []):
        if entry.get("name") == model:
            out: dict[int, int] = {}
            for b in entry.get("batch_stats", []):
                size = int(b.get("batch_size", 0))
                count = int(b.get("compute_infer", {}).get("count", 0))
                out[size] = out.get(size, 0) + count
            return out
    raise BackendError(
        f"no statistics for model {model!r} (models: {[e.get('name') for e in stats.get('model_stats', [])]})"
    )


def metrics_text(url: str, timeout_s: float = 5.0) -> str:
    """The Prometheus metrics page (``http://host:8002/metrics``)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # a URL the caller gives
            return str(response.read().decode("utf-8"))
    except OSError as exc:
        raise BackendError(f"cannot read metrics from {url}: {exc}") from None
