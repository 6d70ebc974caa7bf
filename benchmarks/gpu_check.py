"""One prepared GPU check: what a short window on a lent GPU machine must verify, in one command.

    make gpu-check                                   # writes gpu_check_out/ (or $OUT when set)
    python benchmarks/gpu_check.py --out DIR          # the same from a checkout that is not pip-installed
    python benchmarks/gpu_check.py --sections decode network --quick

Sections (each time-boxed and isolated: a failing one records its error and the check goes on):

* ``environment``  device, driver, CUDA, library versions, commit, date;
* ``decode``       the CUDA decoder against the CPU fast decoder, person by person, on the realistic scenes of
                   :mod:`hhrnet.benchmarks.scenes` (17x512x704, T = 2, 1-30 people, COCO, planted, noise), the
                   maps handed over on the device as torch tensors (``__cuda_array_interface__``, no host copy);
                   time per image (goal <= 1 ms at 30 people), one image and a batch of 8;
* ``network``      W32-512 with flip (the aggregate graph: flip in the batch, maps projected), fp32 and fp16,
                   eager and CUDA graphs: per-image latency and batch throughput, fp16 maps against fp32;
* ``end_to_end``   image -> poses, GPU network + CUDA decoder on the device, against the official pipeline
                   (torch network, maps to the host, :func:`hhrnet.benchmarks.official_port.decode_official`)
                   on the COCO sample images, same run; poses compared per image;
* ``train_amp``    fp16 AMP steps against fp32 from the same weights on the same batches: losses finite and
                   close, images/s;
* ``train_ddp``    a one-process DDP run through ``torchrun`` (nccl on GPU, gloo on CPU);
* ``train_resume`` a run stopped half way, resumed from its checkpoint (model, optimizer, GradScaler, RNG),
                   against the same run straight through;
* ``tensorrt``     where ``tensorrt`` imports: fp16 and int8 engines built from the exported contract, and
                   ``predict --engine`` against ONNX Runtime; otherwise skipped with one line.

Without a GPU every section runs its CPU side on small inputs (the tiny model at 128 px, scenes at 17x128x176)
so the script cannot rot; the check says in one line that no GPU was found and exits 0. Training batches are
synthetic (random images, targets from :mod:`hhrnet.targets`): the GPU machine has no pycocotools and no
data set. The network has random weights (no trained W32 fits the 64 MiB that travel with the tree), so the
end-to-end poses measure the pipeline, not accuracy; the decoder's identity is checked on the scenes.

Results: ``OUT/gpu_check.json`` (every section's rows, status, error, seconds) and ``OUT/gpu_check.md`` (the
short table, also printed). Exit status: 0 unless a section failed or found a mismatch (1).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve()
MAPPED = {"kernels": "kernels", "export": "export", "benchmarks": "benchmarks"}  # hhrnet.<sub> -> folder


def bootstrap(root: Path = ROOT) -> None:
    """Make ``hhrnet`` and its mapped sub-packages importable from a checkout that is not pip-installed.

    setuptools installs ``kernels/`` as ``hhrnet.kernels`` (and ``export/``, ``benchmarks/``); a bare checkout
    on the GPU machine has no such mapping, so each is registered from its folder. An installed hhrnet wins.
    """
    try:
        import hhrnet.kernels

        return
    except ImportError:
        pass
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import hhrnet

    for sub, folder in MAPPED.items():
        name = f"hhrnet.{sub}"
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(
            name, root / folder / "__init__.py", submodule_search_locations=[str(root / folder)]
        )
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot map {name} to {root / folder}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        setattr(hhrnet, sub, module)


# ----------------------------------------------------------------------------------------------
# the run: sections, time boxes, results
# ----------------------------------------------------------------------------------------------


class SectionTimeout(Exception):
    """A section ran past its time box."""


@dataclass
class Check:
    """What every section receives."""

    out: Path
    gpu: bool  # a CUDA GPU that torch sees
    quick: bool = False
    weights: Path | None = None  # a W32 checkpoint for the network sections (default: random weights)

    @property
    def device(self) -> str:
        return "cuda" if self.gpu else "cpu"


@dataclass
class Result:
    name: str
    status: str  # ok | mismatch | failed | skipped | timeout
    seconds: float = 0.0
    summary: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@contextlib.contextmanager
def time_box(seconds: float) -> Iterator[None]:
    """Raise :class:`SectionTimeout` in this (main) thread after ``seconds`` (SIGALRM; off elsewhere)."""
    usable = hasattr(signal, "setitimer") and seconds > 0
    if usable:
        try:
            previous = signal.signal(signal.SIGALRM, _alarm)
        except ValueError:  # not the main thread
            usable = False
    if usable:
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        if usable:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def _alarm(signum: int, frame: Any) -> None:
    raise SectionTimeout("time box spent")


class Skip(Exception):
    """A section that cannot run here; its message is the one line the table shows."""


SectionFn = Callable[[Check], Result]


def run_section(name: str, fn: SectionFn, check: Check, budget_s: float) -> Result:
    """Run one section inside its time box; an exception becomes the section's recorded error."""
    start = time.perf_counter()
    try:
        with time_box(budget_s):
            result = fn(check)
    except Skip as exc:
        result = Result(name, "skipped", summary=str(exc))
    except SectionTimeout:
        result = Result(name, "timeout", error=f"ran past its time box of {budget_s:.0f} s")
    except Exception as exc:  # recorded, and the check goes on
        tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
        result = Result(name, "failed", error=f"{type(exc).__name__}: {exc}", facts={"traceback": tail})
    result.name = name
    result.seconds = round(time.perf_counter() - start, 2)
    return result


def _sync(check: Check) -> Callable[[], None] | None:
    if not check.gpu:
        return None
    import torch

    return torch.cuda.synchronize


def _median_ms(fn: Callable[[], object], repeats: int, sync: Callable[[], None] | None = None) -> float:
    samples = []
    for _ in range(max(repeats, 1)):
        t = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e3


# ----------------------------------------------------------------------------------------------
# environment
# ----------------------------------------------------------------------------------------------


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except Exception:  # absent or broken: reported as missing
        return None
    return str(getattr(mod, "__version__", "present"))


def environment(check: Check) -> Result:
    import torch

    from hhrnet.environment import cpu_name, git_commit, package_version

    facts: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git_commit(ROOT),
        "cpu": f"{cpu_name()} x{os.cpu_count()}",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "numpy": _version("numpy"),
        "numba": _version("numba"),
        "numba_cuda": package_version("numba-cuda"),
        "cupy": _version("cupy"),
        "cuda_python": package_version("cuda-python") or package_version("cuda-bindings"),
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime"),
        "opencv": _version("cv2"),
        "typer": _version("typer"),
        "tensorrt": _version("tensorrt"),
        "pycocotools": package_version("pycocotools"),
        "gpu": None,
        "driver": None,
    }
    if check.gpu:
        props = torch.cuda.get_device_properties(0)
        facts |= {
            "gpu": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "gpu_memory_GiB": round(props.total_memory / 2**30, 1),
            "cudnn": torch.backends.cudnn.version(),
        }
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            )
            facts["driver"] = smi.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            facts["driver"] = "unknown (nvidia-smi failed)"
    summary = f"{facts['gpu'] or 'no GPU'}, driver {facts['driver']}, torch {facts['torch']}"
    return Result("environment", "ok", summary=summary, facts=facts)


# ----------------------------------------------------------------------------------------------
# decode: the CUDA decoder against the CPU fast decoder
# ----------------------------------------------------------------------------------------------

GPU_SCENES: tuple[tuple[str, int], ...] = (
    ("crowd", 1),
    ("crowd", 5),
    ("crowd", 10),
    ("crowd", 20),
    ("crowd", 30),
    ("coco", 197388),
    ("coco", 40083),
    ("planted", 20),
    ("planted", 30),
    ("noise", 0),
)
QUICK_SCENES: tuple[tuple[str, int], ...] = (("crowd", 5), ("crowd", 30), ("coco", 197388), ("noise", 0))
OFFICIAL_MAPS = (17, 512, 704)
CPU_MAPS = (17, 128, 176)
CAPACITY = 512  # persons per image the CUDA decoder keeps: far above what any scene decodes


def compare_persons(
    cpu: tuple[Any, Any], gpu: tuple[Any, Any]
) -> dict[str, Any]:  # (poses (P, J, 3+T), scores (P,)) each
    """Person by person: counts, how many persons are bit-identical (pose and score), the first that differs."""
    import numpy as np

    (cp, cs), (gp, gs) = cpu, gpu
    same = 0
    first = None
    for p in range(min(len(cp), len(gp))):
        if np.array_equal(cp[p], gp[p]) and np.array_equal(cs[p], gs[p]):
            same += 1
        elif first is None:
            first = p
    identical = len(cp) == len(gp) == same
    if first is None and not identical:
        first = min(len(cp), len(gp))
    return {
        "persons_cpu": len(cp),
        "persons_gpu": len(gp),
        "persons_identical": same,
        "identical": identical,
        "first_difference": first,
    }


def decode_rows(
    cases: Sequence[tuple[str, int]],
    shape: tuple[int, int, int],
    gpu_decode: Callable[[Any, Any], tuple[Any, Any]] | None,
    to_device: Callable[[Any], Any] | None,
    *,
    t: int = 2,
    repeats: int = 5,
    sync: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per scene: the CPU fast decoder's persons and time; with ``gpu_decode`` (maps already on the
    device through ``to_device``) the person-by-person comparison and the device time per image."""
    from hhrnet.benchmarks import scenes
    from hhrnet.kernels.decode import decode
    from hhrnet.kernels.params import DecodeParams

    params = DecodeParams(num_joints=shape[0])
    rows = []
    for kind, people in cases:
        sc = scenes.scene(kind, people, shape, t)
        cpu = decode(sc.det, sc.tags, params)
        row: dict[str, Any] = {
            "scene": sc.name,
            "shape": "x".join(map(str, shape)),
            "T": t,
            "people": sc.people,
            "cpu_fast_ms": round(_median_ms(partial(decode, sc.det, sc.tags, params), repeats), 3),
        }
        if gpu_decode is not None and to_device is not None:
            det, tags = to_device(sc.det[None]), to_device(sc.tags[None])
            got = gpu_decode(det, tags)
            row |= compare_persons(cpu, got)
            row["gpu_ms"] = round(_median_ms(partial(gpu_decode, det, tags), repeats, sync), 3)
        else:
            row["persons_cpu"] = len(cpu[0])
        rows.append(row)
    return rows


def _cuda_decoder(capacity: int = CAPACITY) -> tuple[Callable[[Any, Any], tuple[Any, Any]], Callable[[Any, Any], Any]]:
    """decode_cuda on one image and on a batch (:class:`~hhrnet.kernels.decode.DecodedBatch`)."""
    from hhrnet.kernels.cuda import decode_cuda
    from hhrnet.kernels.params import DecodeParams

    def one(det: Any, tags: Any) -> tuple[Any, Any]:
        params = DecodeParams(num_joints=int(det.shape[1]))
        batch = decode_cuda(det, tags, params, capacity=capacity)
        if batch.overflow.any():
            raise RuntimeError(f"more than {capacity} persons: the comparison would be cut")
        return batch.image(0)

    def many(det: Any, tags: Any) -> Any:
        return decode_cuda(det, tags, DecodeParams(num_joints=int(det.shape[1])), capacity=capacity)

    return one, many


def decode_section(check: Check) -> Result:
    cases = QUICK_SCENES if check.quick else GPU_SCENES
    if not check.gpu:
        rows = decode_rows(QUICK_SCENES[:2], CPU_MAPS, None, None, repeats=2)
        return Result("decode", "ok", summary="CPU fast decoder only (CUDA decoder: no GPU)", rows=rows)
    import numpy as np
    import torch

    one, many = _cuda_decoder()
    facts: dict[str, Any] = {}
    warm = time.perf_counter()
    from hhrnet.benchmarks import scenes

    sc = scenes.scene("crowd", 30, OFFICIAL_MAPS, 2)
    det = torch.from_numpy(sc.det[None]).cuda()
    tags = torch.from_numpy(sc.tags[None]).cuda()
    one(det, tags)  # Numba compiles every kernel here
    facts["compile_s"] = round(time.perf_counter() - warm, 1)
    rows = decode_rows(
        cases,
        OFFICIAL_MAPS,
        one,
        lambda a: torch.from_numpy(np.ascontiguousarray(a)).cuda(),
        repeats=5 if check.quick else 20,
        sync=torch.cuda.synchronize,
    )
    # a batch of 8 images of the 30-person scene: time per image
    batch_det, batch_tags = det.repeat(8, 1, 1, 1).contiguous(), tags.repeat(8, 1, 1, 1, 1).contiguous()
    got = many(batch_det, batch_tags)
    same = all(compare_persons(got.image(0), got.image(b))["identical"] for b in range(8))
    per_image = _median_ms(lambda: many(batch_det, batch_tags), 10, torch.cuda.synchronize) / 8
    facts |= {"batch8_crowd30_ms_per_image": round(per_image, 3), "batch8_images_equal": same}
    try:  # the same maps handed over as CuPy arrays
        import cupy

        cp_got = one(cupy.asarray(sc.det[None]), cupy.asarray(sc.tags[None]))
        facts["cupy_identical"] = compare_persons(one(det, tags), cp_got)["identical"]
    except ImportError:
        facts["cupy_identical"] = "cupy not installed"
    ok = all(r["identical"] for r in rows) and same and facts["cupy_identical"] is not False
    at30 = [r["gpu_ms"] for r in rows if r["scene"] == "crowd-30"]
    summary = (
        f"{sum(r['identical'] for r in rows)}/{len(rows)} scenes identical; crowd-30 "
        f"{at30[0] if at30 else '?'} ms/image (goal <= 1), batch of 8 {per_image:.3f} ms/image"
    )
    return Result("decode", "ok" if ok else "mismatch", summary=summary, rows=rows, facts=facts)


# ----------------------------------------------------------------------------------------------
# the network
# ----------------------------------------------------------------------------------------------


def network_config(check: Check) -> Any:
    """W32-512 on a GPU; the tiny model at 128 px on a CPU."""
    from hhrnet.config import apply_overrides, preset

    if check.gpu:
        return preset("coco_w32_512")
    return apply_overrides(preset("tiny"), ["data.input_size=128", "data.output_size=[32,64]"])


def build_network(check: Check, cfg: Any) -> Any:
    import torch

    from hhrnet.model import build_model

    torch.manual_seed(0)
    model = build_model(cfg)
    if check.weights is not None:
        from hhrnet.checkpoint import load_weights

        load_weights(model, check.weights)
    return model.to(check.device).eval()


def aggregate_graph(model: Any, cfg: Any, flip: bool = True) -> Any:
    """The network with the flip test in its batch and the maps projected to the input (the deployed graph)."""
    from hhrnet.codec import resolve_codec
    from hhrnet.export.graph import AggregateGraph

    codec = resolve_codec(cfg)
    return AggregateGraph(
        model,
        num_joints=codec.num_joints,
        flip_index=codec.flip_index,
        flip=flip,
        with_heatmaps=codec.stage_heatmaps,
        with_ae=codec.stage_tags,
        tag_dim=codec.tag_dim,
    ).eval()


def graphed(fn: Callable[[Any], Any], example: Any) -> Callable[[Any], Any]:
    """``fn`` captured as a CUDA graph for inputs shaped like ``example`` (copied into a static input)."""
    import torch

    static = example.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # cudnn picks its algorithms outside the capture
            fn(static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(static)

    def run(x: Any) -> Any:
        static.copy_(x)
        graph.replay()
        return out

    return run


def network_variants(check: Check, model: Any, cfg: Any) -> dict[str, Callable[[Any], Any]]:
    """label -> callable (B, 3, S, S) f32 on the device -> (heatmaps, tags); fp16 and CUDA graphs on a GPU."""
    import torch

    fp32 = aggregate_graph(model, cfg)

    def eager32(x: Any) -> Any:
        with torch.no_grad():
            return fp32(x)

    variants: dict[str, Callable[[Any], Any]] = {"fp32 eager": eager32}
    if check.gpu:
        fp16 = aggregate_graph(copy.deepcopy(model).half(), cfg)

        def eager16(x: Any) -> Any:
            with torch.no_grad():
                return fp16(x.half())

        variants["fp16 eager"] = eager16
    return variants


def network_section(check: Check) -> Result:
    import torch

    cfg = network_config(check)
    model = build_network(check, cfg)
    size = cfg.data.input_size
    sync = _sync(check)
    variants = network_variants(check, model, cfg)
    batches = (1, 8) if check.gpu else (1, 2)
    repeats = (5 if check.quick else 20) if check.gpu else 2
    rows: list[dict[str, Any]] = []
    reference: dict[int, Any] = {}
    for b in batches:
        x = torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(b)).to(check.device)
        runs = dict(variants)
        if check.gpu:
            for label, fn in variants.items():
                runs[label.replace("eager", "cuda graph")] = graphed(fn, x)
        for label, fn in runs.items():
            start = time.perf_counter()
            hm, tags = fn(x)
            if sync is not None:
                sync()
            first_ms = (time.perf_counter() - start) * 1e3
            ms = _median_ms(partial(fn, x), repeats, sync)
            hm32 = hm.float()
            finite = bool(torch.isfinite(hm32).all() and torch.isfinite(tags.float()).all())
            if label == "fp32 eager":
                reference[b] = hm32.clone()
            diff = float((hm32 - reference[b]).abs().max())
            rows.append(
                {
                    "variant": label,
                    "batch": b,
                    "input": f"{b}x3x{size}x{size}",
                    "flip": True,
                    "ms_per_batch": round(ms, 3),
                    "ms_per_image": round(ms / b, 3),
                    "images_per_s": round(b / (ms / 1e3), 1),
                    "first_call_ms": round(first_ms, 1),
                    "finite": finite,
                    "max_abs_vs_fp32": diff,
                }
            )
    params = sum(p.numel() for p in model.parameters())
    one = {r["variant"]: r["ms_per_image"] for r in rows if r["batch"] == 1}
    best = max(rows, key=lambda r: float(r["images_per_s"]))
    summary = (
        f"{cfg.preset} ({params / 1e6:.1f} M params) at {size}: "
        + ", ".join(f"{k} {v} ms" for k, v in one.items())
        + f"; best {best['images_per_s']} img/s ({best['variant']}, batch {best['batch']})"
    )
    ok = all(r["finite"] for r in rows)
    return Result(
        "network",
        "ok" if ok else "mismatch",
        summary=summary,
        rows=rows,
        facts={"model": cfg.preset, "params": params, "weights": str(check.weights or "random")},
    )


# ----------------------------------------------------------------------------------------------
# end to end: image -> poses
# ----------------------------------------------------------------------------------------------


def end_to_end_rows(check: Check, images: Sequence[Any], repeats: int = 3) -> list[dict[str, Any]]:
    """Per image: the official pipeline (torch network, maps to the host, the official parse) against ours
    (the same network, maps kept on the device, the CUDA decoder on a GPU / the fast decoder on a CPU)."""
    import numpy as np
    import torch

    from hhrnet.benchmarks.official_port import decode_official
    from hhrnet.codec import resolve_codec

    cfg = network_config(check)
    model = build_network(check, cfg)
    codec = resolve_codec(cfg)
    params = codec.decode
    net = aggregate_graph(model, cfg)
    sync = _sync(check)
    if check.gpu:
        one, _ = _cuda_decoder()

        def ours_decode(hm: Any, tags: Any) -> tuple[Any, Any]:
            return one(hm.contiguous(), tags.contiguous())  # the maps stay on the device
    else:
        from hhrnet.kernels.decode import decode

        def ours_decode(hm: Any, tags: Any) -> tuple[Any, Any]:
            return decode(hm[0].numpy(), tags[0].numpy(), params)

    def maps(x: np.ndarray) -> tuple[Any, Any]:
        with torch.no_grad():
            return net(torch.from_numpy(x[None]).to(check.device))

    def official(image: np.ndarray) -> Any:
        prepared = codec.preprocess(image)
        hm, tags = maps(prepared.inputs[0][1])
        poses, scores = decode_official(hm[0].cpu().numpy(), tags[0].cpu().numpy(), params)
        return codec.to_image(poses, prepared, tuple(hm.shape[2:])), scores

    def ours(image: np.ndarray) -> Any:
        prepared = codec.preprocess(image)
        hm, tags = maps(prepared.inputs[0][1])
        poses, scores = ours_decode(hm, tags)
        return codec.to_image(poses, prepared, tuple(hm.shape[2:])), scores

    rows = []
    for i, image in enumerate(images):
        official(image), ours(image)  # warm-up: cudnn for this shape, Numba
        a, b = official(image), ours(image)
        same = len(a[1]) == len(b[1]) and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        rows.append(
            {
                "image": i,
                "size": f"{image.shape[1]}x{image.shape[0]}",
                "persons_official": len(a[1]),
                "persons_ours": len(b[1]),
                "identical": bool(same),
                "official_ms": round(_median_ms(partial(official, image), repeats, sync), 2),
                "ours_ms": round(_median_ms(partial(ours, image), repeats, sync), 2),
            }
        )
    return rows


def end_to_end_section(check: Check) -> Result:
    from hhrnet import samples
    from hhrnet.images import read_image

    paths = samples.images()
    images = [read_image(p) for p in (paths[:2] if check.quick or not check.gpu else paths)]
    rows = end_to_end_rows(check, images, repeats=(3 if check.quick else 10) if check.gpu else 1)
    off = statistics.median(r["official_ms"] for r in rows)
    ours = statistics.median(r["ours_ms"] for r in rows)
    decoder = "CUDA decoder" if check.gpu else "fast decoder (CPU)"
    summary = (
        f"{len(rows)} images: official {off:.1f} ms, ours ({decoder}) {ours:.1f} ms per image "
        f"({off / ours:.1f}x); {sum(r['identical'] for r in rows)}/{len(rows)} identical; persons "
        f"{[r['persons_ours'] for r in rows]}"
    )
    ok = all(r["identical"] for r in rows)
    return Result("end_to_end", "ok" if ok else "mismatch", summary=summary, rows=rows)


# ----------------------------------------------------------------------------------------------
# training: AMP against fp32, DDP through torchrun, resume
# ----------------------------------------------------------------------------------------------


def train_config(check: Check) -> Any:
    """W32-512 on a GPU; a toy network at 128 px on a CPU."""
    from hhrnet.config import apply_overrides, preset

    if check.gpu:
        return apply_overrides(preset("coco_w32_512"), ["train.images_per_gpu=8"])
    return apply_overrides(
        preset("tiny"),
        [
            "model.stem_channels=16",
            "model.stage2.num_channels=[8,16]",
            "model.stage3.num_channels=[8,16,32]",
            "model.stage3.num_blocks=[1,1,1]",
            "model.stage4.num_channels=[8,16,32,64]",
            "model.stage4.num_blocks=[1,1,1,1]",
            "model.deconv.num_channels=[8]",
            "data.input_size=128",
            "data.output_size=[32,64]",
            "train.images_per_gpu=2",
            "train.channels_last=False",
        ],
    )


def synthetic_batches(cfg: Any, count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` batches of ``train.images_per_gpu`` random images with 1-6 random people each, and their
    targets from :class:`hhrnet.targets.TargetEncoder` (no data set, no pycocotools)."""
    import numpy as np
    import torch

    from hhrnet.targets import TargetEncoder

    d = cfg.data
    j = cfg.model.num_joints
    encoder = TargetEncoder(
        j, tuple(d.output_size), sigma=d.sigma, max_people=d.max_num_people, tag_per_joint=cfg.model.tag_per_joint
    )
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        items = []
        for _ in range(cfg.train.images_per_gpu):
            people = int(rng.integers(1, 7))
            unit = np.zeros((people, j, 3))
            unit[..., :2] = rng.uniform(0.05, 0.95, (people, 1, 2)) + rng.normal(0, 0.08, (people, j, 2))
            unit[..., 2] = rng.random((people, j)) < 0.8
            joints = []
            for r in d.output_size:
                scaled = unit.copy()
                scaled[..., :2] *= r
                joints.append(scaled)
            heatmaps, packed = encoder(joints)
            items.append((rng.standard_normal((3, d.input_size, d.input_size)).astype(np.float32), heatmaps, packed))
        batches.append(
            {
                "image": torch.from_numpy(np.stack([it[0] for it in items])),
                "heatmaps": [torch.from_numpy(np.stack([it[1][k] for it in items])) for k in range(len(d.output_size))],
                "masks": [torch.ones(len(items), r, r) for r in d.output_size],
                "joints": [torch.from_numpy(np.stack([it[2][k] for it in items])) for k in range(len(d.output_size))],
            }
        )
    return batches


@dataclass
class TrainRun:
    losses: list[float]  # the loss of every step
    images_per_s: float
    model: Any
    optimizer: Any
    scaler: Any


def train_steps(
    cfg: Any,
    device: str,
    amp: str,
    batches: Sequence[dict[str, Any]],
    *,
    model: Any = None,
    optimizer: Any = None,
    scaler: Any = None,
    seed: int = 0,
) -> TrainRun:
    """The library's training step (:func:`hhrnet.training.train_one_epoch`) over ``batches``, one step each,
    from ``seed``'s initial weights unless a model is given; the loss of every step is kept."""
    import torch

    from hhrnet.losses import HigherHRNetLoss
    from hhrnet.model import build_model
    from hhrnet.training import build_optimizer, train_one_epoch

    dev = torch.device(device)
    if model is None:
        torch.manual_seed(seed)
        model = build_model(cfg).to(dev)
        optimizer = build_optimizer(cfg, model)
        scaler = torch.amp.GradScaler("cuda") if amp == "fp16" and dev.type == "cuda" else None
    criterion = HigherHRNetLoss(cfg.loss, cfg.model.num_joints).to(dev)
    losses: list[float] = []
    seconds = 0.0
    images = 0
    for batch in batches:
        stats = train_one_epoch(
            model,
            criterion,
            optimizer,
            scaler,
            [batch],
            epoch=0,
            device=dev,
            amp=amp,
            channels_last=False,
            print_freq=1,
        )
        losses.append(stats.loss)
        seconds += stats.seconds
        images += stats.images
    return TrainRun(losses, images / max(seconds, 1e-9), model, optimizer, scaler)


def amp_rows(cfg: Any, device: str, batches: Sequence[dict[str, Any]], warmup: int = 1) -> list[dict[str, Any]]:
    """fp32 and fp16 AMP from the same initial weights on the same batches (the first ``warmup`` batches run
    untimed in each): one row per precision with every step's loss, and the relative gap of each step."""
    import math

    runs = {}
    for amp in ("none", "fp16"):
        train_steps(cfg, device, amp, batches[:warmup])  # cudnn autotuning, allocator
        runs[amp] = train_steps(cfg, device, amp, batches)
    base = runs["none"].losses
    rows = []
    for amp, run in runs.items():
        gaps = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(run.losses, base, strict=True)]
        rows.append(
            {
                "amp": amp,
                "steps": len(run.losses),
                "first_loss": run.losses[0],
                "last_loss": run.losses[-1],
                "finite": all(math.isfinite(x) for x in run.losses),
                "max_rel_gap_vs_fp32": max(gaps),
                "first_step_rel_gap": gaps[0],
                "images_per_s": round(run.images_per_s, 1),
                "losses": [round(x, 6) for x in run.losses],
            }
        )
    return rows


AMP_FIRST_STEP_TOLERANCE = 0.02  # fp16 autocast against fp32 on the same weights and batch
AMP_TOLERANCE = 0.10  # any step: the runs drift apart a little with every update


def train_amp_section(check: Check) -> Result:
    cfg = train_config(check)
    steps = (6 if check.quick else 20) if check.gpu else 3
    batches = synthetic_batches(cfg, steps + 1)
    rows = amp_rows(cfg, check.device, batches[1:], warmup=1)
    fp32, fp16 = rows
    close = fp16["first_step_rel_gap"] <= AMP_FIRST_STEP_TOLERANCE and fp16["max_rel_gap_vs_fp32"] <= AMP_TOLERANCE
    ok = fp32["finite"] and fp16["finite"] and close
    note = "" if check.gpu else " (CPU: autocast is off, both run fp32)"
    summary = (
        f"{steps} steps at batch {cfg.train.images_per_gpu}: fp32 {fp32['images_per_s']} img/s, fp16 "
        f"{fp16['images_per_s']} img/s; loss gap first step {fp16['first_step_rel_gap']:.2e}, max "
        f"{fp16['max_rel_gap_vs_fp32']:.2e}{note}"
    )
    return Result("train_amp", "ok" if ok else "mismatch", summary=summary, rows=rows)


def ddp_worker(out: Path, steps: int, gpu: bool) -> None:
    """Run by torchrun: join the process group (nccl on GPU, gloo on CPU), train ``steps`` DDP steps on
    synthetic batches, and write what happened to ``out/rank<R>.json``."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from hhrnet.training.distributed import init_distributed, pick_device, shutdown

    check = Check(out=out, gpu=gpu)
    device = pick_device("cuda" if gpu else "cpu")
    info = init_distributed(device)
    if not info.enabled and not dist.is_initialized():  # one process: torchrun still sets RANK and friends
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    cfg = train_config(check)
    torch.manual_seed(0)
    from hhrnet.model import build_model
    from hhrnet.training import build_optimizer

    model = build_model(cfg).to(device)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_optimizer(cfg, net)
    amp = "fp16" if device.type == "cuda" else "none"
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    run = train_steps(
        cfg,
        str(device),
        amp,
        synthetic_batches(cfg, steps, seed=dist.get_rank()),
        model=net,
        optimizer=optimizer,
        scaler=scaler,
    )
    facts = {
        "backend": dist.get_backend(),
        "world_size": dist.get_world_size(),
        "rank": dist.get_rank(),
        "device": str(device),
        "amp": amp,
        "losses": run.losses,
        "images_per_s": round(run.images_per_s, 1),
    }
    (out / f"rank{dist.get_rank()}.json").write_text(json.dumps(facts))
    shutdown(info)
    if dist.is_initialized():
        dist.destroy_process_group()


def launch_ddp(out: Path, steps: int, gpu: bool, timeout_s: float) -> dict[str, Any]:
    """``torchrun --standalone --nproc_per_node 1`` on this script's worker; returns rank 0's facts."""
    out.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "1",
        str(SCRIPT),
        "--ddp-worker",
        str(out),
        "--ddp-steps",
        str(steps),
    ] + ([] if gpu else ["--cpu"])
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun exited {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}")
    return dict(json.loads((out / "rank0.json").read_text()))


def train_ddp_section(check: Check) -> Result:
    import math

    steps = 5 if check.gpu else 2
    with tempfile.TemporaryDirectory(prefix="gpu-check-ddp-") as tmp:
        facts = launch_ddp(Path(tmp), steps, check.gpu, timeout_s=240)
    finite = all(math.isfinite(x) for x in facts["losses"])
    summary = (
        f"torchrun, {facts['world_size']} process, {facts['backend']} on {facts['device']} "
        f"({facts['amp']}): {len(facts['losses'])} steps, {facts['images_per_s']} img/s, losses finite: {finite}"
    )
    return Result("train_ddp", "ok" if finite else "mismatch", summary=summary, facts=facts)


def resume_facts(cfg: Any, device: str, amp: str, batches: Sequence[dict[str, Any]], folder: Path) -> dict[str, Any]:
    """The steps straight through, against the first half, a checkpoint, a fresh process's state loaded from it
    (model, optimizer, GradScaler, RNG) and the second half: the largest parameter difference at the end."""
    import torch

    from hhrnet.model import build_model
    from hhrnet.training import TrainState, build_optimizer
    from hhrnet.training.state import load_training_checkpoint, save_training_checkpoint

    half = len(batches) // 2
    straight = train_steps(cfg, device, amp, batches)
    first = train_steps(cfg, device, amp, batches[:half])
    path = folder / "checkpoint.pth"
    save_training_checkpoint(path, first.model, cfg, first.optimizer, first.scaler, TrainState(epoch=0, step=half))
    model = build_model(cfg).to(device)
    optimizer = build_optimizer(cfg, model)
    scaler = torch.amp.GradScaler("cuda") if first.scaler is not None else None
    state = load_training_checkpoint(path, model, optimizer, scaler)
    second = train_steps(cfg, device, amp, batches[half:], model=model, optimizer=optimizer, scaler=scaler)
    with torch.no_grad():
        diff = max(
            float((a - b).abs().max()) for a, b in zip(straight.model.parameters(), model.parameters(), strict=True)
        )
    return {
        "steps": len(batches),
        "resumed_at_step": state.step,
        "amp": amp,
        "max_param_diff": diff,
        "losses_straight": straight.losses,
        "losses_resumed": first.losses + second.losses,
        "scaler_restored": scaler is not None
        and first.scaler is not None
        and scaler.get_scale() == first.scaler.get_scale(),
    }


RESUME_TOLERANCE = 1e-4  # on a GPU cuDNN's algorithms may differ between the two runs (not bit-reproducible)


def train_resume_section(check: Check) -> Result:
    import torch

    cfg = train_config(check)
    steps = 6 if check.gpu else 4
    amp = "fp16" if check.gpu else "none"
    deterministic = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        with tempfile.TemporaryDirectory(prefix="gpu-check-resume-") as tmp:
            facts = resume_facts(cfg, check.device, amp, synthetic_batches(cfg, steps, seed=3), Path(tmp))
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = deterministic
    ok = facts["max_param_diff"] <= RESUME_TOLERANCE
    summary = (
        f"{steps} steps ({amp}), resumed at step {facts['resumed_at_step']}: largest parameter difference "
        f"to the straight run {facts['max_param_diff']:.3g}"
    )
    return Result("train_resume", "ok" if ok else "mismatch", summary=summary, facts=facts)


# ----------------------------------------------------------------------------------------------
# TensorRT (a user's machine: the lent GPU machine has none)
# ----------------------------------------------------------------------------------------------


def cli(args: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """``hhrnet ARGS`` in a child process that needs no installed package (this script's ``--cli``)."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--cli", *args], capture_output=True, text=True, timeout=timeout_s, cwd=ROOT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"hhrnet {' '.join(args)} exited {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}")
    return proc


def tensorrt_section(check: Check) -> Result:
    try:
        import tensorrt as trt
    except ImportError:
        trt = None
    if trt is None or not hasattr(trt, "Builder"):  # tensorrt-stubs alone leaves an empty namespace package
        raise Skip("tensorrt is not importable here: engines not built, --engine parity not checked")
    if not check.gpu:
        raise Skip("tensorrt imports but torch sees no GPU: engines not built")
    extra: dict[str, Any] = {"tensorrt": trt.__version__}
    # what reading NVIDIA's documentation could not settle (TF32 under strong typing in 11.x, bytes-only parsing of
    # external weights, -1 for an incomplete profile): measured on this TensorRT and GPU, recorded with the results
    from hhrnet.export.tensorrt import verify_facts

    try:
        extra["facts"] = verify_facts(trt, execute=True)
    except Exception as exc:  # a fact that cannot be measured is recorded, the engines are still built
        extra["facts"] = {"error": f"{type(exc).__name__}: {exc}"}
    from hhrnet import samples
    from hhrnet.checkpoint import make_payload, save_checkpoint

    images = str(samples.folder("coco"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-trt-") as tmp:
        t = Path(tmp)
        weights = check.weights
        if weights is None:
            cfg = network_config(check)
            weights = save_checkpoint(t / "w32-random.pth", make_payload(build_network(check, cfg).cpu(), cfg))
        onnx = t / "w32.onnx"
        cli(
            [
                "export",
                "--checkpoint",
                str(weights),
                "--format",
                "onnx",
                "--graph",
                "aggregate",
                "--static",
                "--letterbox",
                "512",
                "--out",
                str(onnx),
            ],
            300,
        )
        cli(["predict", images, "--onnx", str(onnx), "--out", str(t / "onnx")], 300)
        for precision in ("fp16", "int8"):
            source = t / f"w32-{precision}.onnx"
            calib = ["--calib-images", images, "--int8-target", "tensorrt"] if precision == "int8" else []
            cli(["export", "--onnx", str(onnx), "--precision", precision, *calib, "--out", str(source)], 600)
            engine = t / f"w32-{precision}.engine"
            cli(["export", "--format", "engine", "--onnx", str(source), "--out", str(engine)], 900)
            cli(["predict", images, "--engine", str(engine), "--out", str(t / precision)], 300)
            rows.append({"precision": precision, **predictions_agree(t / "onnx", t / precision)})
    summary = "; ".join(
        f"{r['precision']}: {r['images_same_count']}/{r['images']} images with ONNX Runtime's person "
        f"count, max keypoint difference {r['max_keypoint_px']} px"
        for r in rows
    )
    return Result("tensorrt", "ok", summary=summary, rows=rows, facts=extra)


def predictions_agree(reference: Path, got: Path) -> dict[str, Any]:
    """Two ``predict`` outputs (COCO results in ``predictions.json``): per image the person counts, and where
    they match the largest keypoint difference (x, y in image pixels) between persons in score order."""
    import numpy as np

    def per_image(folder: Path) -> dict[Any, list[tuple[float, np.ndarray]]]:
        out: dict[Any, list[tuple[float, np.ndarray]]] = {}
        for r in json.loads((folder / "predictions.json").read_text()):
            out.setdefault(r["image_id"], []).append((r["score"], np.asarray(r["keypoints"], np.float64)))
        return {k: sorted(v, key=lambda x: -x[0]) for k, v in out.items()}

    a, b = per_image(reference), per_image(got)
    same = [k for k in a.keys() | b.keys() if len(a.get(k, [])) == len(b.get(k, []))]
    diff = 0.0
    for k in same:
        for (_, ka), (_, kb) in zip(a.get(k, []), b.get(k, []), strict=True):
            xy = np.abs(ka.reshape(-1, 3)[:, :2] - kb.reshape(-1, 3)[:, :2])
            diff = max(diff, float(xy.max()) if xy.size else 0.0)
    return {
        "images": len(a.keys() | b.keys()),
        "images_same_count": len(same),
        "max_keypoint_px": round(diff, 3),
        "persons_onnx": sum(map(len, a.values())),
        "persons": sum(map(len, b.values())),
    }


# ----------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------

SECTIONS: dict[str, tuple[SectionFn, float]] = {  # name -> (function, time box on a GPU in seconds)
    "environment": (environment, 20),
    "decode": (decode_section, 120),  # Numba compiles the CUDA kernels here (counted in compile_s)
    "network": (network_section, 75),
    "end_to_end": (end_to_end_section, 60),
    "train_amp": (train_amp_section, 60),
    "train_ddp": (train_ddp_section, 90),  # torchrun, a fresh process: torch, CUDA and nccl start again
    "train_resume": (train_resume_section, 45),
    "tensorrt": (tensorrt_section, 420),  # only where TensorRT is installed: engine builds take minutes
}
# Without TensorRT (the lent machine) the boxes add up to 470 s: the whole check fits in 8 minutes.


def table(results: Sequence[Result]) -> str:
    """The short markdown report: one header line from the environment, one row per section."""
    env = next((r.facts for r in results if r.name == "environment" and r.status == "ok"), {})
    head = (
        f"GPU check {env.get('date', '?')} commit {env.get('commit', '?')}: {env.get('gpu') or 'no GPU'}, "
        f"driver {env.get('driver')}, CUDA {env.get('torch_cuda')}, torch {env.get('torch')}, numba "
        f"{env.get('numba')}, numba-cuda {env.get('numba_cuda')}, cupy {env.get('cupy')}, Python "
        f"{env.get('python')}, CPU {env.get('cpu')}"
    )
    lines = [head, "", "| section | status | s | result |", "|---|---|---|---|"]
    for r in results:
        text = (r.summary or r.error).replace("|", "/").replace("\n", " ")
        lines.append(f"| {r.name} | {r.status} | {r.seconds} | {text} |")
    return "\n".join(lines) + "\n"


def run(
    out: Path,
    sections: Sequence[str] | None = None,
    quick: bool = False,
    weights: Path | None = None,
    gpu: bool | None = None,
) -> list[Result]:
    """Run the sections in order (all by default), write ``out/gpu_check.json`` and ``out/gpu_check.md``."""
    import torch

    names = list(sections) if sections else list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section {', '.join(unknown)}; sections: {', '.join(SECTIONS)}")
    if "environment" not in names:
        names.insert(0, "environment")
    check = Check(out=out, gpu=torch.cuda.is_available() if gpu is None else gpu, quick=quick, weights=weights)
    if not check.gpu:  # the CPU side is a smoke run: torch's threads fight over a busy machine's cores
        torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in names:
        fn, budget = SECTIONS[name]
        results.append(run_section(name, fn, check, budget if check.gpu else max(budget, 120)))
        _write(out, check, results)  # after every section: a cut-off run still leaves what it measured
    return results


def _write(out: Path, check: Check, results: Sequence[Result]) -> None:
    payload = {"gpu": check.gpu, "quick": check.quick, "sections": [r.__dict__ for r in results]}
    (out / "gpu_check.json").write_text(json.dumps(payload, indent=1, default=str))
    (out / "gpu_check.md").write_text(table(results))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_check.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check_out"), help="results folder")
    parser.add_argument("--sections", nargs="*", help=f"some of: {' '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="fewer scenes, images and repeats")
    parser.add_argument("--weights", type=Path, help="a W32 checkpoint (default: random weights)")
    parser.add_argument("--cpu", action="store_true", help="run the CPU side even where a GPU is found")
    parser.add_argument("--ddp-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ddp-steps", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ddp_worker is not None:
        import torch

        ddp_worker(args.ddp_worker, args.ddp_steps, gpu=torch.cuda.is_available() and not args.cpu)
        return 0
    try:
        results = run(args.out, args.sections, args.quick, args.weights, gpu=False if args.cpu else None)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    sys.stdout.write(table(results))
    if not any(r.facts.get("gpu") for r in results if r.name == "environment"):
        sys.stdout.write("no GPU found: ran the CPU side only\n")
    sys.stdout.write(f"results: {args.out / 'gpu_check.json'}, {args.out / 'gpu_check.md'}\n")
    return 1 if any(r.status in ("failed", "mismatch", "timeout") for r in results) else 0


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == SCRIPT.parent:  # run as a file: not the benchmarks folder
        sys.path.pop(0)
    bootstrap()
    if len(sys.argv) > 1 and sys.argv[1] == "--cli":  # `python -m hhrnet ARGS` with the mapping in place
        import runpy

        sys.argv = ["hhrnet", *sys.argv[2:]]
        runpy.run_module("hhrnet", run_name="__main__", alter_sys=True)
        raise SystemExit(0)
    raise SystemExit(main())
