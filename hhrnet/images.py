"""Reading images the way the official code does, with truncated and corrupt files reported, not guessed.

``cv2.imread`` decodes a truncated JPEG into a half-grey picture and only prints libjpeg's warning on
stderr, so a damaged file would be predicted and counted as a success. Here the bytes are read once,
JPEG and PNG files must end with their end-of-image marker, and the decoder's result is checked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hhrnet.errors import InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})
_PNG_END = b"IEND\xaeB`\x82"


def truncation(data: bytes) -> str | None:
    """Why ``data`` is a truncated JPEG or PNG, or None when its end marker is present (other formats: None)."""
    if data[:3] == b"\xff\xd8\xff":
        if data.rstrip(b"\x00\r\n\t ")[-2:] != b"\xff\xd9":
            return "truncated JPEG (no end-of-image marker)"
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        if data.rstrip(b"\x00")[-8:] != _PNG_END:
            return "truncated PNG (no IEND chunk)"
    return None


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Encoded bytes -> RGB uint8 (H, W, 3); InputError naming ``name`` when corrupt or truncated."""
    import cv2

    why = truncation(data)
    if why is not None:
        raise InputError(f"cannot use {name}: {why}")
    buf = np.frombuffer(data, np.uint8)
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if buf.size else None
    if image is None:
        raise InputError(f"cannot decode {name} (corrupt or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) as the official code reads it (``IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION``)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"image not found: {p}")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}") from None
    return decode_image(data, str(p))


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """RGB uint8 (H, W, 3) -> JPEG bytes (OpenCV's default quality is 95); InputError when it cannot encode."""
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise InputError(f"could not encode a {image.dtype} {image.shape} image as JPEG")
    return buf.tobytes()
