"""Reading and writing checkpoints: official releases, ImageNet backbones and this project's own files.

Every read uses ``torch.load(..., weights_only=True)``: a checkpoint never executes pickled code.
Every write is atomic (temp file + fsync + rename), so an interrupted save never leaves a torn file.

Accepted layouts:
  * official released weights: a flat ``state_dict``;
  * fp16-trained official weights: keys prefixed ``1.`` (``network_to_half`` wrapper, docs/official.md §3);
  * DDP weights: keys prefixed ``module.``;
  * wrappers ``{"state_dict": ...}`` (official ``checkpoint.pth.tar``) or ``{"model": ...}``;
  * ours: ``{"format": "hhrnet-checkpoint", "version": 1, "model": state_dict, "config": {...}, ...}``.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from hhrnet.config import Config, from_dict, layered, preset
from hhrnet.datasets import facts_for_joints
from hhrnet.errors import CheckpointError, ConfigError
from hhrnet.io import atomic_save_torch
from hhrnet.model import HigherHRNet, build_model, checkpoint_filter_fn

FORMAT = "hhrnet-checkpoint"
VERSION = 1
_LIST_LIMIT = 8


def _refusal_reason(exc: BaseException) -> str:
    """The useful line of torch's weights-only refusal (it names the blocked global), without its advice."""
    for line in str(exc).splitlines():
        line = line.strip()
        if "GLOBAL" in line or line.startswith(("Unsupported", "Trying to load")):
            return line.rstrip(".")
    return "it contains objects other than tensors and plain containers"


def _load_file(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    with p.open("rb") as fh:
        head = fh.read(4)
    if head[:2] != b"PK" and head[:1] != b"\x80":  # torch's zip format, or a legacy pickle
        raise CheckpointError(f"{p} is not a PyTorch checkpoint (neither a torch zip archive nor a pickle)")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{p} was refused: loading it would run code or build arbitrary objects ({_refusal_reason(exc)}); "
            "hhrnet only loads plain-weights checkpoints"
        ) from None
    except Exception as exc:  # torn/garbage files fail in many ways inside the unpickler
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {p}: it is corrupt or truncated ({first})") from None


def _find_state_dict(obj: Any, path: str | Path) -> Mapping[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                return inner
        if obj and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
            return obj
    raise CheckpointError(f"{path} holds no model weights (expected a state_dict or a dict with 'state_dict'/'model')")


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Normalised flat state_dict and the rest of the file (``meta``; ``meta['config']`` for ours)."""
    obj = _load_file(path)
    state = checkpoint_filter_fn(_find_state_dict(obj, path))
    meta: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        meta = {k: v for k, v in obj.items() if k not in ("model", "state_dict")}
    return state, meta


def _shorten(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _LIST_LIMIT else "")


def _mismatch_message(model: nn.Module, state: Mapping[str, Tensor], source: str) -> str | None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if shapes:
        parts.append(f"shape mismatch: {_shorten(shapes)}")
    if missing:
        parts.append(f"missing keys: {_shorten(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_shorten(unexpected)}")
    hint = ""
    head = state.get("final_layers.1.weight")
    if head is not None and isinstance(model, HigherHRNet) and head.shape[0] != model.num_joints:
        hint = (
            f" — the checkpoint predicts {head.shape[0]} joints but the model has {model.num_joints}"
            " (COCO has 17, CrowdPose 14: check --config)"
        )
    elif "conv1.weight" in state and "conv1.weight" in own and state["conv1.weight"].shape != own["conv1.weight"].shape:
        hint = " — the checkpoint is for a different architecture (check --config)"
    return f"checkpoint {source} does not match the model{hint}; " + "; ".join(parts)


def load_weights(model: nn.Module, source: str | Path | Mapping[str, Tensor], strict: bool = True) -> None:
    """Load weights into ``model``; any mismatch is a CheckpointError naming the keys and shapes."""
    if isinstance(source, Mapping):
        state, name = checkpoint_filter_fn(source), "state_dict"
    else:
        state, _ = read_checkpoint(source)
        name = str(source)
    problem = _mismatch_message(model, state, name)
    if problem is not None and strict:
        raise CheckpointError(problem)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(usable, strict=strict)


def embedded_config(meta: Mapping[str, Any], path: str | Path) -> Config | None:
    """The config an hhrnet checkpoint carries (None for official checkpoints)."""
    if not isinstance(meta.get("config"), Mapping):
        return None
    try:
        return from_dict(meta["config"])
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {path} carries an invalid config: {exc}") from None


def default_config(state: Mapping[str, Tensor]) -> Config:
    """For an official checkpoint: the COCO or CrowdPose W32-512 preset, by the joints its head predicts."""
    head = state.get("final_layers.1.weight")
    joints = int(head.shape[0]) if head is not None else 17
    facts = facts_for_joints(joints)
    return preset(f"{facts.name}_w32_512" if facts is not None else "coco_w32_512")


def load_model(
    path: str | Path,
    cfg: Config | None = None,
    map_location: str | torch.device = "cpu",
    *,
    config: str | Path | Config | None = None,
    overrides: Sequence[str] = (),
) -> tuple[HigherHRNet, Config]:
    """Build the model for a checkpoint and load it (strict).

    ``cfg`` is used as given. Otherwise the config follows the precedence rule
    (:func:`hhrnet.config.layered`): the checkpoint's own config (ours carry one; official ones get the
    COCO or CrowdPose W32-512 preset by joint count), replaced by ``config``, then ``overrides``.
    """
    state, meta = read_checkpoint(path)
    if cfg is None:
        cfg = layered(embedded_config(meta, path), config, overrides, fallback=lambda: default_config(state))
    model = build_model(cfg)
    load_weights(model, state, strict=True)
    return model.to(map_location).eval(), cfg


def load_pretrained(model: nn.Module, path: str | Path, layers: Sequence[str] = ("*",)) -> list[str]:
    """Official ``PRETRAINED_LAYERS`` semantics: load every key whose first dotted component is in
    ``layers`` (all keys when ``layers[0] == '*'``) and that exists in the model with the same shape;
    ignore the rest (e.g. the ImageNet classifier). Returns the loaded keys."""
    state, _ = read_checkpoint(path)
    own = model.state_dict()
    take_all = bool(layers) and layers[0] == "*"
    chosen = {
        k: v
        for k, v in state.items()
        if (take_all or k.split(".", 1)[0] in layers) and k in own and tuple(v.shape) == tuple(own[k].shape)
    }
    if not chosen:
        raise CheckpointError(f"no weights in {path} match the model for layers {list(layers)}")
    model.load_state_dict(chosen, strict=False)
    return list(chosen)


def make_payload(model: nn.Module, cfg: Config, **extra: Any) -> dict[str, Any]:
    """Our checkpoint dict: unwrapped state_dict (no ``module.``), the config, and anything extra."""
    net = model.module if hasattr(model, "module") else model
    assert isinstance(net, nn.Module)
    return {"format": FORMAT, "version": VERSION, "model": net.state_dict(), "config": cfg.to_dict(), **extra}


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write atomically; a crash mid-write leaves the previous file intact."""
    return atomic_save_torch(path, dict(payload))
