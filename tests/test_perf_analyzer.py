"""perf_analyzer's input files (benchmarks/serve.py): what make perf-analyzer hands Triton's load generator."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from hhrnet import samples
from hhrnet.benchmarks.serve import bytes_input_json, float_input_json, preprocessed


def test_bytes_input_is_tritons_serialized_bytes_tensor() -> None:
    """Each entry decodes to Triton's raw BYTES form of the encoded image (what tritonclient sends)."""
    utils = pytest.importorskip("tritonclient.utils")
    payloads = [p.read_bytes() for p in samples.images()[:2]]
    data = bytes_input_json("image", payloads)["data"]
    assert len(data) == 2
    for entry, payload in zip(data, payloads, strict=True):
        raw = base64.b64decode(entry["image"]["b64"])
        expected = utils.serialize_byte_tensor(np.array([payload], dtype=np.object_)).item()
        assert raw == expected
        assert utils.deserialize_bytes_tensor(raw)[0] == payload


def test_preprocessed_inputs_are_the_codecs_network_inputs() -> None:
    from hhrnet.codec import Codec
    from hhrnet.config import preset
    from hhrnet.images import decode_image

    codec = Codec.from_config(preset("tiny"), letterbox=128)
    payload = samples.images()[0].read_bytes()
    (x,) = preprocessed(codec, [payload])
    assert x.shape == (3, 128, 128) and x.dtype == np.float32
    np.testing.assert_array_equal(x, codec.preprocess(decode_image(payload)).inputs[0][1])
    entry = float_input_json("input", [x])["data"][0]["input"]
    assert entry["shape"] == [3, 128, 128]
    np.testing.assert_allclose(np.asarray(entry["content"], np.float32).reshape(x.shape), x, atol=1e-5)
