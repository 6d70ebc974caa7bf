"""What each exported graph kind computes: one declaration per kind, read by export, the runtimes, the predictor,
the decoder and the Triton writer (nobody compares graph names).

* ``raw``: ``out0`` (B, J+T', H/4, W/4) and ``out1`` (B, J, H/2, W/2), the network alone; the host runs the
  flipped copy in the same batch and aggregates (stages, flip, projection, scales);
* ``aggregate``: ``heatmaps`` (B, J, H', W') and ``tags`` (B, J, H', W', T): network, flip test, stage averaging
  and projection in the graph, so the host only decodes;
* ``peaks``: ``aggregate``'s outputs plus ``peak_vals`` / ``peak_index`` (B, J, M) and ``peak_tags`` (B, J, M, T):
  max-pool NMS and top-k in the graph too.

H' x W' is the input size with projection (``test.project2image``), half of it without; T is 2 with flip.
A graph that aggregates bakes in the codec fields of :attr:`GraphKind.baked` (changing them needs a new export)
and runs one scale; a peaks graph also bakes in the NMS window and the top-k.

A leaf module (standard library only).
"""

from __future__ import annotations

from dataclasses import dataclass

from hhrnet.choices import GRAPHS, Graph
from hhrnet.errors import ConfigError

# codec fields an aggregating graph computes inside, so an artifact cannot be run with other values
_AGGREGATE_BAKED = ("flip", "flip_index", "stage_heatmaps", "stage_tags", "project2image")


@dataclass(frozen=True)
class GraphKind:
    """One exported graph kind: its outputs and what runs inside it."""

    name: Graph
    outputs: tuple[str, ...]
    aggregates: bool  # flip test, stage averaging and projection run in the graph: outputs are decoder-ready maps
    peaks: bool  # max-pool NMS and top-k run in the graph too
    baked: tuple[str, ...]  # codec fields the graph fixes (besides the joint and tag channel counts)
    baked_decode: tuple[tuple[str, str], ...]  # (decode parameter, the config key that sets it) the graph fixes

    @property
    def host_flips(self) -> bool:
        """Whether the host runs the flipped copy (in the same batch) and merges it."""
        return not self.aggregates

    @property
    def multi_scale(self) -> bool:
        """Whether several test scales can run (only the host combines scales)."""
        return not self.aggregates

    @property
    def servable(self) -> bool:
        """Whether the served pipeline (letterbox -> network -> decode, no host aggregation) can run it."""
        return self.aggregates

    def check_scales(self, scales: tuple[float, ...]) -> None:
        if len(scales) != 1 and not self.multi_scale:
            raise ConfigError(f"the {self.name} graph runs one scale; multi-scale needs a raw export")


KINDS: dict[str, GraphKind] = {
    k.name: k
    for k in (
        GraphKind("raw", ("out0", "out1"), aggregates=False, peaks=False, baked=(), baked_decode=()),
        GraphKind(
            "aggregate", ("heatmaps", "tags"), aggregates=True, peaks=False, baked=_AGGREGATE_BAKED, baked_decode=()
        ),
        GraphKind(
            "peaks",
            ("heatmaps", "tags", "peak_vals", "peak_index", "peak_tags"),
            aggregates=True,
            peaks=True,
            baked=_AGGREGATE_BAKED,
            baked_decode=(("nms_kernel", "test.nms_kernel"), ("max_num_people", "data.max_num_people")),
        ),
    )
}
assert tuple(KINDS) == GRAPHS


def graph_kind(name: str) -> GraphKind:
    """The declaration of graph kind ``name``; ConfigError naming the kinds when unknown."""
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown graph {name!r}; expected one of {', '.join(GRAPHS)}") from None


__all__ = ["KINDS", "Graph", "GraphKind", "graph_kind"]
