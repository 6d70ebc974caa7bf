"""What an exported file is, written into it and read back from it.

Three metadata entries travel with every artifact (ONNX ``metadata_props``, TensorRT engine sidecar):

* ``hhrnet.codec``    the :class:`~hhrnet.codec.Codec` the export was verified with (complete);
* ``hhrnet.config``   the full config, the base layer of config precedence for commands run on the artifact;
* ``hhrnet.artifact`` what the graph computes: ``graph`` (raw | aggregate | peaks), ``precision`` (fp32 |
  fp16 | int8) with its ``calibration`` provenance, a fixed input ``static_hw`` or none, the hhrnet version.

:meth:`Artifact.check` refuses a codec that contradicts what the graph bakes in (e.g. ``--no-flip`` on a
graph that flips inside), so a command can change decode thresholds on an artifact but never run it with
a pipeline it was not built for. :meth:`Artifact.check_graph` compares the contract with the graph itself
(input rank and channels, output names, ranks, joint and tag channel counts) when a runtime opens it, so an
unrelated model carrying copied metadata, or a 14-joint contract on a 17-joint graph, is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hhrnet.choices import PRECISIONS
from hhrnet.codec import Codec
from hhrnet.errors import ConfigError
from hhrnet.graphs import GraphKind, graph_kind

KEYS = ("hhrnet.codec", "hhrnet.config", "hhrnet.artifact")


def _shape(dims: Sequence[Any]) -> str:
    return "(" + ", ".join("?" if d is None or not isinstance(d, int) else str(d) for d in dims) + ")"


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
        graph_kind(self.graph)  # ConfigError when unknown
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        if self.static_hw is not None:
            object.__setattr__(self, "static_hw", tuple(int(v) for v in self.static_hw))
        object.__setattr__(self, "config", json.loads(json.dumps(self.config)))  # as read back: lists, not tuples
        self.check(self.codec)

    @property
    def kind(self) -> GraphKind:
        return graph_kind(self.graph)

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.kind.outputs

    def check(self, codec: Codec) -> None:
        """ConfigError when ``codec`` asks for a pipeline this graph cannot run (:mod:`hhrnet.graphs`)."""
        kind = self.kind
        kind.check_scales(codec.scales)
        for name, key in kind.baked_decode:
            if getattr(codec.decode, name) != getattr(self.codec.decode, name):
                raise ConfigError(f"the {self.graph} graph has its {name} built in: re-export to change {key}")
        for name in ("num_joints", "tag_channels", "tag_dim", *kind.baked):
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

    def expected_outputs(self) -> dict[str, tuple[int | None, ...]]:
        """Output name -> expected shape (None: any size) of this graph under the contract: J heatmap channels,
        the codec's tag channels, T = 2 D with flip; a raw graph's stages carry tags where the model says."""
        c = self.codec
        j, t = c.num_joints, c.tag_channels
        if not self.kind.aggregates:
            model = self.config.get("model", {}) if isinstance(self.config, dict) else {}
            stages = list(model.get("tag_stages", [True] + [False] * (len(c.stage_tags) - 1)))
            return {f"out{i}": (None, j + (t * c.tag_dim if has else 0), None, None) for i, has in enumerate(stages)}
        shapes: dict[str, tuple[int | None, ...]] = {
            "heatmaps": (None, j, None, None),
            "tags": (None, t, None, None, c.tag_dims),
        }
        if self.kind.peaks:
            shapes |= {"peak_vals": (None, j, None), "peak_index": (None, j, None), "peak_tags": (None, j, None, None)}
        return shapes

    def check_graph(
        self, inputs: Sequence[tuple[str, Sequence[Any]]], outputs: Sequence[tuple[str, Sequence[Any]]], source: str
    ) -> None:
        """ConfigError naming the first mismatch between the graph's declared inputs/outputs (name, shape with
        ints or symbolic dims) and this contract: one (B, 3, H, W) image input (fixed to ``static_hw`` when
        static), the graph kind's outputs in order with their ranks and channel counts."""
        if len(inputs) != 1:
            raise ConfigError(f"{source}: the graph has {len(inputs)} inputs; an hhrnet export has one image input")
        name, shape = inputs[0]
        if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
            raise ConfigError(f"{source}: input {name!r} is {_shape(shape)}; the contract needs (B, 3, H, W)")
        fixed = tuple(shape[2:]) if all(isinstance(d, int) for d in shape[2:]) else None
        if fixed != self.static_hw and not (fixed is None and self.static_hw is None):
            raise ConfigError(
                f"{source}: input {name!r} is {_shape(shape)} but the contract says "
                + (f"a fixed {self.static_hw[0]}x{self.static_hw[1]} input" if self.static_hw else "any image size")
            )
        expected = self.expected_outputs()
        names = [n for n, _ in outputs]
        if names != list(expected):
            raise ConfigError(f"{source}: outputs {names} do not match its {self.graph} graph ({list(expected)})")
        for (out, got), want in zip(outputs, expected.values(), strict=True):
            if len(got) != len(want) or any(
                w is not None and isinstance(g, int) and g != w for g, w in zip(got, want, strict=True)
            ):
                raise ConfigError(
                    f"{source}: output {out!r} is {_shape(got)}, but the contract ({self.codec.num_joints} joints, "
                    f"{self.codec.tag_channels} tag channels, {self.graph} graph) needs {_shape(want)}"
                )

    def with_codec(self, codec: Codec) -> Artifact:
        """The same artifact run with another (compatible) codec."""
        self.check(codec)
        return Artifact(
            codec,
            self.config,
            self.graph,
            self.precision,
            self.calibration,
            self.static_hw,
            self.hhrnet_version,
            self.extra,
        )

    def info(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "precision": self.precision,
            "calibration": self.calibration,
            "static_hw": list(self.static_hw) if self.static_hw else None,
            "hhrnet_version": self.hhrnet_version,
            "extra": self.extra,
        }

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
                codec=codec,
                config=config,
                graph=info["graph"],
                precision=info["precision"],
                calibration=info.get("calibration"),
                static_hw=info.get("static_hw"),
                hhrnet_version=info.get("hhrnet_version", ""),
                extra=info.get("extra") or {},
            )
        except KeyError as exc:
            raise ConfigError(f"{source}: hhrnet.artifact lacks {exc}") from None

    def build_config(self) -> Any:
        """The embedded config as a :class:`~hhrnet.config.Config`."""
        from hhrnet.config import from_dict

        return from_dict(self.config)
