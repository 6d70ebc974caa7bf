"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

Write to a temporary file in the destination directory (``.<name>.<pid>.<random>.tmp``: the next write to the
same destination removes one whose process is gone, e.g. killed with -9), fsync it, give it the mode a plain
``open`` would (0666 minus the umask, so a serving process under another user can read it), then ``os.replace`` (atomic
on POSIX and Windows within one filesystem), then fsync the directory so the rename survives a crash.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; restore at once
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(dest: Path) -> list[Path]:
    """Remove ``.<name>.<pid>.*.tmp`` files beside ``dest`` whose writer process is gone (killed mid-write)."""
    removed = []
    for f in dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp"):
        pid = f.name[len(dest.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                f.unlink()
                removed.append(f)
    return removed


@contextlib.contextmanager
def _atomic(path: str | Path, mode: str) -> Iterator[IO[Any]]:
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest)  # what a writer killed with -9 left: its pid is in the name
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # not every platform can open a directory
        dir_fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_json(path: str | Path, error: type[Exception], missing: str) -> Any:
    """Parse the JSON file ``path``; ``error(missing)`` when it does not exist, ``error`` naming it when unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise error(missing) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"cannot read {path}: {exc}") from None


def check_writable_file(path: str | Path) -> Path:
    """ConfigError when ``path`` is a folder or its folder cannot be created or written (a probe file is made and
    removed; ``path`` itself is not touched)."""
    from hhrnet.errors import ConfigError

    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p} is a folder, not a file")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".probe", dir=p.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"{p} cannot be written: {exc.strerror or exc}") from None
    if p.exists() and not os.access(p, os.W_OK) and not os.access(p.parent, os.W_OK):
        raise ConfigError(f"{p} cannot be written: permission denied")
    return p


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with _atomic(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: str | Path, writer: Callable[[IO[bytes]], None]) -> Path:
    """Let ``writer`` stream into a binary file handle; the result appears atomically at ``path``."""
    with _atomic(path, "wb") as fh:
        writer(fh)
    return Path(path)


def atomic_save_torch(path: str | Path, obj: object) -> Path:
    import torch

    return atomic_write_with(path, lambda fh: torch.save(obj, fh))
