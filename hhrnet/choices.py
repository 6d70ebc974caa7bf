"""The named choices of the library, one ``Literal`` each, with its tuple of values (``get_args`` of it).

A leaf module (standard library only) so that the CLI can use these types as its option choices without
importing NumPy or anything else at start-up. The modules that act on a choice check their argument against
its tuple: ``hhrnet.runtime.artifact`` (graph, precision), ``hhrnet.inference`` (decoder), ``hhrnet.load``
(backend), ``hhrnet.serve.repository`` (Triton network backend), ``hhrnet.export.precision`` (calibration
method, int8 target); ``hhrnet.config`` types its dataset field with ``DatasetName``.
"""

from __future__ import annotations

from typing import Literal, get_args

Graph = Literal["raw", "aggregate", "peaks"]
GRAPHS: tuple[Graph, ...] = get_args(Graph)

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)

Decoder = Literal["fast", "reference", "cuda"]
DECODERS: tuple[Decoder, ...] = get_args(Decoder)

Backend = Literal["auto", "torch", "onnxruntime", "tensorrt"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)

NetworkBackend = Literal["onnxruntime", "tensorrt", "python"]
NETWORK_BACKENDS: tuple[NetworkBackend, ...] = get_args(NetworkBackend)

CalibMethod = Literal["minmax", "entropy", "percentile"]
METHODS: tuple[CalibMethod, ...] = get_args(CalibMethod)

Int8Target = Literal["tensorrt", "cpu"]
TARGETS: tuple[Int8Target, ...] = get_args(Int8Target)

DatasetName = Literal["coco", "crowdpose"]
