"""Error types. Every error a user can cause is an :class:`HHRNetError` with one clear message.

The CLI prints ``str(error)`` on one line (no traceback unless ``--debug``); library code raises,
it never prints or exits.
"""

from __future__ import annotations


class HHRNetError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class ConfigError(HHRNetError):
    """Unknown key, bad value or unreadable config file."""


class CheckpointError(HHRNetError):
    """Checkpoint missing, unreadable, or not matching the model."""


class InputError(HHRNetError):
    """Unreadable image/video, wrong input shape, NaN maps, malformed annotations."""


class BackendError(HHRNetError):
    """A runtime (ONNX Runtime, TensorRT, CUDA) is missing or cannot run this model/engine."""


class TrainingError(HHRNetError):
    """Training cannot continue (NaN/inf loss, inconsistent resume state)."""
