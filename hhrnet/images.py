"""Reading images the way the official code does, bounded before decoding, with truncated and corrupt files
reported, not guessed.

* Size before pixels: the width and height are read from the file's header (:func:`header_size`: JPEG, PNG,
  BMP, WebP and TIFF, the formats accepted here) and checked against :class:`ImageLimits` before a single
  pixel is decoded, so a 1.7 MB TIFF of 20000x20000 is refused without allocating 1.2 GB. A file whose header
  cannot be read is refused: only formats whose header is checked are decoded.
* Truncation: ``cv2.imread`` decodes a truncated JPEG into a half-grey picture and only prints libjpeg's
  warning on stderr, so JPEG and PNG files must end with their end-of-image marker; the decoder's result is
  checked too.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hhrnet.errors import ConfigError, InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})
FORMATS = "JPEG, PNG, BMP, WebP or TIFF"
_PNG_END = b"IEND\xaeB`\x82"

# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); C4, C8 and CC are not frames
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RSTn, SOI: no length field


@dataclass(frozen=True)
class ImageLimits:
    """What an input image may be. Larger files are refused from their size and header, before decoding."""

    max_bytes: int = 32 << 20  # encoded size
    max_pixels: int = 40_000_000  # width * height (an 8K frame is 33 MP)

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise ConfigError(f"image limits must be positive, got {self.max_bytes} bytes / {self.max_pixels} pixels")


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i + 1 < n:
        if data[i] != 0xFF:
            return None  # not at a marker: a corrupt stream
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        i += 2
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA) or i + 2 > n:  # end of image or start of scan before any frame header
            return None
        length = (data[i] << 8) | data[i + 1]
        if marker in _SOF:
            if i + 7 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 3 : i + 7])
            return int(w), int(h)
        i += length
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth / ImageLength of the first IFD (the page OpenCV decodes); BigTIFF is not read."""
    end = "<" if data[:2] == b"II" else ">"
    if len(data) < 8 or struct.unpack(end + "H", data[2:4])[0] != 42:
        return None
    ifd = struct.unpack(end + "I", data[4:8])[0]
    if ifd + 2 > len(data):
        return None
    count = struct.unpack(end + "H", data[ifd : ifd + 2])[0]
    size: dict[int, int] = {}
    for k in range(count):
        at = ifd + 2 + 12 * k
        if at + 12 > len(data):
            return None
        tag, kind = struct.unpack(end + "HH", data[at : at + 4])
        if tag in (256, 257):
            short = kind == 3  # SHORT, else LONG
            size[tag] = struct.unpack(end + ("H" if short else "I"), data[at + 8 : at + (10 if short else 12)])[0]
    return (size[256], size[257]) if len(size) == 2 else None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG, PNG, BMP, WebP or TIFF header; None for other formats or no readable header."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) >= 24 and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return int(w), int(h)
        return None
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:2] == b"BM" and len(data) >= 26:
        if struct.unpack("<I", data[14:18])[0] == 12:  # BITMAPCOREHEADER: 16-bit sizes
            w, h = struct.unpack("<HH", data[18:22])
            return int(w), int(h)
        w, h = struct.unpack("<ii", data[18:26])
        return abs(int(w)), abs(int(h))  # a negative height is a top-down bitmap
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(data)
    return None


def truncation(data: bytes) -> str | None:
    """Why ``data`` is a truncated JPEG or PNG, or None when its end marker is present (other formats: None)."""
    if data[:3] == b"\xff\xd8\xff":
        if data.rstrip(b"\x00\r\n\t ")[-2:] != b"\xff\xd9":
            return "truncated JPEG (no end-of-image marker)"
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        if data.rstrip(b"\x00")[-8:] != _PNG_END:
            return "truncated PNG (no IEND chunk)"
    return None


def check_header(data: bytes, name: str = "image", limits: ImageLimits | None = None) -> tuple[int, int]:
    """(width, height) from the header, within ``limits``; InputError naming ``name`` otherwise. Decodes nothing."""
    limits = limits or ImageLimits()
    if len(data) == 0:
        raise InputError(f"{name} is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InputError(f"{name} is {len(data)} bytes; at most {limits.max_bytes} are accepted")
    size = header_size(data)
    if size is None:
        raise InputError(f"cannot decode {name}: no readable {FORMATS} header (corrupt or not an image)")
    w, h = size
    if w < 1 or h < 1:
        raise InputError(f"{name} has a zero-sized header ({w}x{h})")
    if w * h > limits.max_pixels:
        raise InputError(f"{name} is {w}x{h} pixels; at most {limits.max_pixels} pixels are accepted")
    return w, h


SizeCheck = Callable[[int, int, str], None]  # (width, height, name) -> None or InputError, e.g. Codec.check_size


def decode_image(
    data: bytes, name: str = "image", limits: ImageLimits | None = None, fits: SizeCheck | None = None
) -> np.ndarray:
    """Encoded bytes -> RGB uint8 (H, W, 3); InputError naming ``name`` when too large, corrupt or truncated.
    ``fits`` (e.g. :meth:`hhrnet.codec.Codec.check_size`) is asked about the header's size before decoding."""
    import cv2

    w, h = check_header(data, name, limits)
    if fits is not None:
        fits(w, h, name)
    why = truncation(data)
    if why is not None:
        raise InputError(f"cannot use {name}: {why}")
    buf = np.frombuffer(data, np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise InputError(f"cannot decode {name} (corrupt or not an image)")
    if image.shape[:2] != (h, w):  # the header lied (e.g. a second, larger frame): refuse what was not checked
        raise InputError(f"{name} decodes to {image.shape[1]}x{image.shape[0]} but its header says {w}x{h}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: str | Path, limits: ImageLimits | None = None, fits: SizeCheck | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) as the official code reads it (``IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION``); the
    file's size and header are checked against ``limits`` first."""
    p = Path(path)
    limits = limits or ImageLimits()
    if not p.is_file():
        raise InputError(f"image not found: {p}")
    try:
        size = p.stat().st_size
        if size > limits.max_bytes:
            raise InputError(f"{p} is {size} bytes; at most {limits.max_bytes} are accepted")
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}") from None
    return decode_image(data, str(p), limits, fits)


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """RGB uint8 (H, W, 3) -> JPEG bytes (OpenCV's default quality is 95); InputError when it cannot encode."""
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise InputError(f"could not encode a {image.dtype} {image.shape} image as JPEG")
    return buf.tobytes()
