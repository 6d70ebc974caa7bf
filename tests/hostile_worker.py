"""Run under an address-space limit by tests/test_bad_inputs.py: ``python hostile_worker.py LIMIT_BYTES JOB ...``.

Jobs: ``serve-decode`` (forged huge headers through the serving decode), ``property N`` (a hypothesis property
over random bytes, forged headers and real images through predict's reading and preprocessing).
"""

from __future__ import annotations

import resource
import struct
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np


def tiff_header(width: int, height: int, big_endian: bool = False) -> bytes:
    """A TIFF whose first IFD claims ``width`` x ``height`` (8-bit RGB, one strip of no data)."""
    e = ">" if big_endian else "<"
    tags = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 2),
        (273, 4, 0),
        (277, 3, 3),
        (278, 4, height),
        (279, 4, 0),
    ]
    ifd = struct.pack(e + "H", len(tags))
    for tag, kind, value in tags:
        packed = struct.pack(e + "HH", value, 0) if kind == 3 else struct.pack(e + "I", value)
        ifd += struct.pack(e + "HHI", tag, kind, 1) + packed
    return (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(e + "I", 8) + ifd + b"\x00\x00\x00\x00"


def png_header(width: int, height: int, tail: bytes = b"") -> bytes:
    ihdr = struct.pack(">II", width, height) + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + tail


def bmp_header(width: int, height: int, tail: bytes = b"") -> bytes:
    return b"BM" + bytes(12) + struct.pack("<Iii", 40, width, height) + tail


def jpeg_header(width: int, height: int, tail: bytes = b"") -> bytes:
    return b"\xff\xd8\xff\xc0\x00\x11\x08" + struct.pack(">HH", height & 0xFFFF, width & 0xFFFF) + tail


def webp_header(width: int, height: int, tail: bytes = b"") -> bytes:
    size = (width & 0xFFFFFF).to_bytes(3, "little") + (height & 0xFFFFFF).to_bytes(3, "little")
    return b"RIFF" + bytes(4) + b"WEBPVP8X" + bytes(8) + size + tail


def png_bytes(height: int, width: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.full((height, width, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


def serve_decode() -> None:
    from hhrnet.errors import InputError
    from hhrnet.serve.pipeline import ImageLimits, decode_request_image

    for name, data in (
        ("tiff", tiff_header(20000, 20000)),
        ("png", png_header(60000, 60000)),
        ("bmp", bmp_header(30000, 30000)),
    ):
        try:
            decode_request_image(data, ImageLimits())
        except InputError as exc:
            print(name, exc)
    print("wide", decode_request_image(png_bytes(1, 4000), ImageLimits()).shape)


def property_check(examples: int) -> None:
    import cv2
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from hhrnet.codec import Codec
    from hhrnet.config import preset
    from hhrnet.errors import HHRNetError
    from hhrnet.images import ImageLimits
    from hhrnet.predict import read_input

    codec = Codec.from_config(preset("tiny"))
    limits = ImageLimits()
    folder = Path(tempfile.mkdtemp())
    side = st.integers(0, (1 << 31) - 1)
    headers = {
        "png": png_header,
        "bmp": bmp_header,
        "jpeg": jpeg_header,
        "webp": webp_header,
        "tiff": lambda w, h, tail=b"": tiff_header(w, h) + tail,
    }

    def encoded(shape: tuple[int, int, str]) -> bytes:
        h, w, ext = shape
        ok, buf = cv2.imencode(ext, np.full((h, w, 3), 77, np.uint8))
        return bytes(buf.tobytes()) if ok else b""

    formats = st.sampled_from([".png", ".jpg", ".bmp", ".webp", ".tiff"])
    inputs = st.one_of(
        st.binary(max_size=512),
        st.builds(
            lambda kind, w, h, tail: headers[kind](w, h, tail),
            st.sampled_from(sorted(headers)),
            side,
            side,
            st.binary(max_size=64),
        ),
        st.tuples(st.integers(1, 48), st.integers(1, 2500), formats).map(encoded),
        st.tuples(st.integers(1, 2500), st.integers(1, 48), formats).map(encoded),
    )
    seen = {"ok": 0, "refused": 0}

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(inputs)
    def check(data: bytes) -> None:
        path = folder / "x.img"
        path.write_bytes(data)
        try:
            prepared = codec.preprocess(read_input(path, limits, codec))
        except HHRNetError:
            seen["refused"] += 1
            return
        for _, x in prepared.inputs:
            assert x.shape[1] * x.shape[2] <= codec.max_input_pixels and max(x.shape[1:]) <= codec.max_input_side
        seen["ok"] += 1

    check()
    print("ok", seen["ok"], "refused", seen["refused"])


if __name__ == "__main__":
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if sys.argv[2] == "serve-decode":
        serve_decode()
    elif sys.argv[2] == "property":
        property_check(int(sys.argv[3]))
    else:
        sys.exit(f"unknown job {sys.argv[2]!r}")
