"""What an exported file is, written into it and read back from it.

Three metadata entries travel with every artifact (ONNX ``metadata_props``, TensorRT engine sidecar):

* ``hhrnet.codec``    the :class:`~hhrnet.codec.Codec` the export was verified with (complete);
* ``hhrnet.config``   the full config, the base layer of config precedence for commands run on the artifact;
* ``hhrnet.artifact`` what the graph computes: ``graph`` (raw | aggregate | peaks), ``precision`` (fp32 |
  fp16 | int8) with its ``calibration`` provenance, a fixed input ``static_hw`` or none, the hhrnet version.

:meth:`Artifact.check` refuses a codec that contradicts what the graph bakes in (e.g. ``--no-flip`` on a
graph that flips inside), so a command can change decode thresholds on an artifact but never run it with
a pipeline it was not built for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hhrnet.choices import GRAPHS, PRECISIONS
from hhrnet.codec import Codec
from hhrnet.errors import ConfigError

OUTPUTS: dict[str, tuple[str, ...]] = {
    "raw": ("out0", "out1"),
    "aggregate": ("heatmaps", "tags"),
    "peaks": ("heatmaps", "tags", "peak_vals", "peak_index", "peak_tags"),
}
KEYS = ("hhrnet.codec", "hhrnet.config", "hhrnet.artifact")


@dataclass(frozen=True)
class Artifact:
    """The contract of one exported file."""

    codec: Codec
    config: dict[str, Any]  # Config.to_dict() of the model exported
    graph: str = "raw"
    precision: str = "fp32"
    calibration: dict[str, Any] | None = None  # int8: images, method, count, hash; None otherwise
    static_hw: tuple[int, int] | None = None  # fixed (H, W) of a static export (the codec letterboxes to it)
    hhrnet_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. kept-fp32 nodes of a reduced-precision graph

    def __post_init__(self) -> None:
        if self.graph not in GRAPHS:
            raise ConfigError(f"unknown graph {self.graph!r}; expected one of {', '.join(GRAPHS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        if self.static_hw is not None:
            object.__setattr__(self, "static_hw", tuple(int(v) for v in self.static_hw))
        object.__setattr__(self, "config", json.loads(json.dumps(self.config)))  # as read back: lists, not tuples
        self.check(self.codec)

    @property
    def outputs(self) -> tuple[str, ...]:
        return OUTPUTS[self.graph]

    def check(self, codec: Codec) -> None:
        """ConfigError when ``codec`` asks for a pipeline this graph cannot run."""
        fixed = ["num_joints", "tag_channels"]
        if self.graph != "raw":
            fixed += ["flip", "flip_index", "stage_heatmaps", "stage_tags", "project2image"]
            if len(codec.scales) != 1:
                raise ConfigError(f"the {self.graph} graph runs one scale; multi-scale needs a raw export")
        if self.graph == "peaks":
            if codec.decode.nms_kernel != self.codec.decode.nms_kernel:
                raise ConfigError("the peaks graph has its NMS kernel built in: re-export to change test.nms_kernel")
            if codec.decode.max_num_people != self.codec.decode.max_num_people:
                raise ConfigError("the peaks graph has its top-k built in: re-export to change data.max_num_people")
        for name in fixed:
            if getattr(codec, name) != getattr(self.codec, name):
                raise ConfigError(
                    f"this {self.graph} export was built with {name}={getattr(self.codec, name)!r}; "
                    f"{getattr(codec, name)!r} needs a new export"
                )
        if self.static_hw is not None:
            side = self.static_hw[0]
            if self.static_hw[0] != self.static_hw[1] or codec.letterbox != side:
                raise ConfigError(
                    f"this export has a fixed {self.static_hw[0]}x{self.static_hw[1]} input: it runs with letterbox "
                    f"{side}, not {codec.letterbox or 'the official resize'}"
                )

    def with_codec(self, codec: Codec) -> Artifact:
        """The same artifact run with another (compatible) codec."""
        self.check(codec)
        return Artifact(codec, self.config, self.graph, self.precision, self.calibration, self.static_hw,
                        self.hhrnet_version, self.extra)  # fmt: skip

    def info(self) -> dict[str, Any]:
        return {
            "graph": self.graph, "precision": self.precision, "calibration": self.calibration,
            "static_hw": list(self.static_hw) if self.static_hw else None, "hhrnet_version": self.hhrnet_version,
            "extra": self.extra,
        }  # fmt: skip

    def metadata(self) -> dict[str, str]:
        """The three metadata entries (JSON strings)."""
        return {
            "hhrnet.codec": self.codec.to_json(),
            "hhrnet.config": json.dumps(self.config, sort_keys=True),
            "hhrnet.artifact": json.dumps(self.info(), sort_keys=True),
        }

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], source: str) -> Artifact:
        """Rebuild from the metadata entries; ConfigError naming ``source`` when they are missing or malformed."""
        missing = [k for k in KEYS if k not in meta]
        if missing:
            raise ConfigError(
                f"{source} carries no hhrnet contract ({', '.join(missing)} missing): export it with hhrnet export"
            )
        codec = Codec.from_json(meta["hhrnet.codec"], source)
        try:
            config = json.loads(meta["hhrnet.config"])
            info = json.loads(meta["hhrnet.artifact"])
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: malformed hhrnet metadata ({exc})") from None
        if not isinstance(config, dict) or not isinstance(info, dict):
            raise ConfigError(f"{source}: malformed hhrnet metadata")
        try:
            return cls(
                codec=codec, config=config, graph=info["graph"], precision=info["precision"],
                calibration=info.get("calibration"), static_hw=info.get("static_hw"),
                hhrnet_version=info.get("hhrnet_version", ""), extra=info.get("extra") or {},
            )  # fmt: skip
        except KeyError as exc:
            raise ConfigError(f"{source}: hhrnet.artifact lacks {exc}") from None

    def build_config(self) -> Any:
        """The embedded config as a :class:`~hhrnet.config.Config`."""
        from hhrnet.config import from_dict

        return from_dict(self.config)
