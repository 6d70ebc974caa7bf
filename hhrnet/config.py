"""Typed, frozen configuration with named presets, official YAML loading and dotted overrides.

Sections mirror the official yacs tree (docs/official.md §2) under readable names:

* :class:`ModelConfig`  <- ``MODEL`` (+ ``MODEL.EXTRA``, ``MODEL.SYNC_BN``)
* :class:`DataConfig`   <- ``DATASET``
* :class:`LossConfig`   <- ``LOSS``
* :class:`TrainConfig`  <- ``TRAIN``, ``FP16``, ``WORKERS``, ``AUTO_RESUME``, ``OUTPUT_DIR``, ...
* :class:`TestConfig`   <- ``TEST`` (grouping/decoding parameters live here)

An official experiment YAML loads with :func:`load_yaml`; keys it leaves out take the official
``lib/config/default.py`` defaults (note: these differ from the presets in places, e.g.
``TEST.DETECTION_THRESHOLD`` 0.2, ``DATASET.MAX_SCALE`` 1.25, ``LOSS.AE_LOSS_TYPE`` 'max').
An unknown key is a :class:`~hhrnet.errors.ConfigError` naming the key and the nearest valid one.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

from hhrnet.choices import DatasetName
from hhrnet.datasets import dataset_facts
from hhrnet.errors import ConfigError
from hhrnet.kernels.params import OFFICIAL_COCO_ORDER

# Official grouping order (group.py:113-119), owned by the decoder's parameters; CrowdPose uses the first 14
# entries (docs/official.md B5).
COCO_JOINT_ORDER: tuple[int, ...] = OFFICIAL_COCO_ORDER


@dataclass(frozen=True)
class StageConfig:
    """One HRNet stage: ``num_modules`` HighResolutionModules over ``num_branches`` branches."""

    num_modules: int
    num_branches: int
    num_blocks: tuple[int, ...]  # BasicBlocks per branch
    num_channels: tuple[int, ...]  # channels per branch (stride 4, 8, 16, 32)
    block: Literal["BASIC", "BOTTLENECK"] = "BASIC"
    fuse_method: Literal["SUM"] = "SUM"


@dataclass(frozen=True)
class DeconvConfig:
    """HigherHRNet deconvolution head (one 2x upsampling per deconv)."""

    num_deconvs: int = 1
    num_channels: tuple[int, ...] = (32,)
    kernel_size: tuple[int, ...] = (4,)
    num_basic_blocks: int = 4
    cat_output: tuple[bool, ...] = (True,)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "pose_higher_hrnet"
    num_joints: int = 17  # J
    tag_per_joint: bool = True  # tags have J channels (else 1)
    tag_stages: tuple[bool, ...] = (True, False)  # output stages that carry tag channels (official: LOSS.WITH_AE_LOSS)
    tag_dim: int = 1  # D: values per tag (official: 1); D groups of tag channels, compared by Euclidean distance
    stem_channels: int = 64  # hard-coded 64 in the official code; smaller only for the tiny preset
    layer1_blocks: int = 4  # Bottlenecks in layer1 (official: 4)
    stage2: StageConfig = StageConfig(1, 2, (4, 4), (32, 64))
    stage3: StageConfig = StageConfig(4, 3, (4, 4, 4), (32, 64, 128))
    stage4: StageConfig = StageConfig(3, 4, (4, 4, 4, 4), (32, 64, 128, 256))
    deconv: DeconvConfig = DeconvConfig()
    final_conv_kernel: int = 1
    tag_position: bool = False  # not official: tags get a learned linear term of the pixel position
    pretrained: str = ""  # ImageNet backbone or pose checkpoint used to initialise training
    pretrained_layers: tuple[str, ...] = ("*",)
    init_weights: bool = True
    sync_bn: bool = False


@dataclass(frozen=True)
class DataConfig:
    dataset: DatasetName = "coco"
    root: str = ""
    train_split: str = "train2017"
    test_split: str = "val2017"
    data_format: str = "jpg"
    num_joints: int = 17
    max_num_people: int = 30
    input_size: int = 512
    output_size: tuple[int, ...] = (128, 256)
    # augmentation (RandomAffineTransform + flip)
    max_rotation: float = 30.0
    min_scale: float = 0.75
    max_scale: float = 1.5
    scale_type: Literal["short", "long"] = "short"
    max_translate: int = 40
    flip: float = 0.5
    # heatmap targets
    sigma: float = 2.0
    scale_aware_sigma: bool = False
    base_size: float = 256.0
    base_sigma: float = 2.0
    int_sigma: bool = False
    with_center: bool = False

    @property
    def flip_index(self) -> tuple[int, ...]:
        base = dataset_facts(self.dataset).flip_index
        return base + ((len(base),) if self.with_center else ())


@dataclass(frozen=True)
class LossConfig:
    num_stages: int = 2
    ae_loss_type: Literal["exp", "max"] = "exp"
    # not official: the tag distance at which the ``max`` push stops, max(0, margin - |d|) (official: 1). The
    # decoder measures tag distances in rounded units (its matching cost and refine), so people whose tags are
    # pushed only 1 apart are often within one rounding unit of each other (benchmarks/TRAINING.md)
    ae_push_margin: float = 1.0
    with_ae_loss: tuple[bool, ...] = (True, False)
    push_loss_factor: tuple[float, ...] = (0.001, 0.001)
    pull_loss_factor: tuple[float, ...] = (0.001, 0.001)
    with_heatmaps_loss: tuple[bool, ...] = (True, True)
    heatmaps_loss_factor: tuple[float, ...] = (1.0, 1.0)


@dataclass(frozen=True)
class TrainConfig:
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    lr_factor: float = 0.1
    lr_step: tuple[int, ...] = (200, 260)
    # "step": the official MultiStepLR (x lr_factor at each lr_step epoch); "cosine": half a cosine from lr to 0
    # over the run (end_epoch epochs, or the time budget). Both follow the time fraction in a budgeted run.
    lr_schedule: Literal["step", "cosine"] = "step"
    warmup: float = 0.0  # fraction of the run over which the lr ramps up linearly from 0 (0: none, official)
    minutes: float = 0.0  # wall-clock training budget; 0: train end_epoch epochs (official)
    momentum: float = 0.9
    wd: float = 1e-4  # ignored by the official Adam (docs/official.md §2); used only with apply_weight_decay
    apply_weight_decay: bool = False
    nesterov: bool = False
    begin_epoch: int = 0
    end_epoch: int = 300
    images_per_gpu: int = 12
    shuffle: bool = True
    workers: int = 4
    # precision / performance
    amp: Literal["none", "fp16", "bf16"] = "none"  # official FP16.ENABLED -> fp16 (GPU only)
    channels_last: bool = False
    # one fused kernel for the whole Adam update (torch's ``fused=True``) instead of a loop over the parameters:
    # the same update up to float rounding order; the official presets keep torch's default
    fused_optimizer: bool = False
    # bookkeeping
    auto_resume: bool = True
    resume: str = ""  # explicit checkpoint to resume from
    output_dir: str = "runs"
    print_freq: int = 100
    seed: int = 0
    val_every: int = 1  # validation AP every N epochs when a validation set exists (0: never)


@dataclass(frozen=True)
class TestConfig:
    images_per_gpu: int = 1
    flip_test: bool = True
    scale_factor: tuple[float, ...] = (1.0,)
    project2image: bool = True
    with_heatmaps: tuple[bool, ...] = (True, True)
    with_ae: tuple[bool, ...] = (True, False)
    model_file: str = ""
    # grouping (HeatmapParser Params)
    detection_threshold: float = 0.1
    tag_threshold: float = 1.0
    use_detection_val: bool = True
    ignore_too_much: bool = False
    nms_kernel: int = 5
    nms_padding: int = 2
    adjust: bool = True
    refine: bool = True
    ignore_center: bool = True
    log_progress: bool = False
    # deliberate departures from the official decoder (docs/official.md §11); official behaviour by default
    max_persons: int = 0  # B2: 0 = unbounded (official); >0 keeps at most this many persons
    unique_person_keys: bool = False  # B1: never merge a new person into one with an equal tag key
    ties_positive: bool = False  # B3: on equal neighbours, keep x (no -0.25 shift) instead of -0.25
    pose_nms: float = 0.0  # not official: OKS threshold of person-level NMS after decoding (0 = off), e.g. 0.9
    # bounds on one network input (not official): an image whose resize exceeds them is refused (hhrnet.codec)
    max_input_pixels: int = 4096 * 1024
    max_input_side: int = 4096


@dataclass(frozen=True)
class Config:
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    test: TestConfig = TestConfig()
    preset: str = "custom"  # name of the preset or YAML this came from

    @property
    def num_joints(self) -> int:
        return self.model.num_joints

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------------


def _w48(model: ModelConfig) -> ModelConfig:
    return replace(
        model,
        stage2=StageConfig(1, 2, (4, 4), (48, 96)),
        stage3=StageConfig(4, 3, (4, 4, 4), (48, 96, 192)),
        stage4=StageConfig(3, 4, (4, 4, 4, 4), (48, 96, 192, 384)),
        deconv=DeconvConfig(num_channels=(48,)),
    )


def _make_preset(dataset: DatasetName, width: int, size: int) -> Config:
    joints = dataset_facts(dataset).num_joints
    model = ModelConfig(num_joints=joints)
    if width == 48:
        model = _w48(model)
    model = replace(
        model,
        pretrained=f"models/pytorch/imagenet/hrnet_w{width}-{'36af842e' if width == 32 else '8ef0771d'}.pth",
    )
    data = DataConfig(
        dataset=dataset,
        root=f"data/{'coco' if dataset == 'coco' else 'crowd_pose'}",
        train_split="train2017" if dataset == "coco" else "trainval",
        test_split="val2017" if dataset == "coco" else "test",
        num_joints=joints,
        input_size=size,
        output_size=(size // 4, size // 2),
    )
    train = TrainConfig(images_per_gpu=12 if width == 32 else 10, amp="fp16" if size == 640 else "none")
    name = f"{dataset}_w{width}_{size}"
    return Config(model=model, data=data, train=train, preset=name)


def _tiny() -> Config:
    """A small HigherHRNet that learns the built-in synthetic data on a CPU in minutes (benchmarks/TRAINING.md).

    Not an official model: wider and deeper than a toy (1.19 M parameters) so that the tags see whole figures,
    with a narrow stem (16 channels: the stride-2/4 layers were a third of a training step); tags of two values
    with a learned position term (``model.tag_dim=2``, ``model.tag_position``: a tag can then say where its
    person stands, and neighbours differ by where they stand; of the confident val poses 26 % joined two figures
    with the official one-value tags, 10 % with these, and val AP rose from 0.70 to 0.74); the ``max`` AE push
    (``exp`` has no gradient at equal tags, where the tags start) pushing to a tag distance of 4, so that
    neighbours' tags end up several of the decoder's rounding units apart; Adam at 3e-3 (one fused kernel) with
    a 3% warm-up and a cosine decay over 30 epochs (1500 steps on the demo's 400 images: 6-9 min on 2 cores of
    the project's Intel Xeon at 23-35 img/s); channels_last (faster convolutions on CPU); the official tag
    threshold and a detection threshold of 0.2 in the decoder.
    """
    model = ModelConfig(
        num_joints=17,
        stem_channels=16,
        layer1_blocks=1,
        stage2=StageConfig(1, 2, (1, 1), (16, 32)),
        stage3=StageConfig(1, 3, (1, 2, 2), (16, 32, 64)),
        stage4=StageConfig(1, 4, (1, 2, 2, 2), (16, 32, 64, 128)),
        deconv=DeconvConfig(num_channels=(16,), num_basic_blocks=1),
        tag_dim=2,
        tag_position=True,
        init_weights=True,
    )
    data = DataConfig(input_size=256, output_size=(64, 128), root="data/synth", train_split="train", test_split="val")
    loss = LossConfig(ae_loss_type="max", ae_push_margin=4.0)
    train = TrainConfig(
        images_per_gpu=8,
        lr=3e-3,
        lr_schedule="cosine",
        warmup=0.03,
        end_epoch=30,
        workers=0,
        print_freq=10,
        channels_last=True,
        fused_optimizer=True,
    )
    # decoder: the official tag threshold (1.0) with tags pushed 4 apart; a detection threshold of 0.2 (chosen on
    # a separate synthetic split, benchmarks/TRAINING.md)
    test = TestConfig(detection_threshold=0.2)
    return Config(model=model, data=data, loss=loss, train=train, test=test, preset="tiny")


PRESETS: dict[str, Callable[[], Config]] = {
    "coco_w32_512": lambda: _make_preset("coco", 32, 512),
    "coco_w32_640": lambda: _make_preset("coco", 32, 640),
    "coco_w48_640": lambda: _make_preset("coco", 48, 640),
    "crowdpose_w32_512": lambda: _make_preset("crowdpose", 32, 512),
    "crowdpose_w32_640": lambda: _make_preset("crowdpose", 32, 640),
    "crowdpose_w48_640": lambda: _make_preset("crowdpose", 48, 640),
    "tiny": _tiny,
}


def preset(name: str) -> Config:
    """Return the named preset; unknown names raise a ConfigError with the nearest match."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}{_suggest(name, PRESETS)}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]()


# --------------------------------------------------------------------------------------------
# official YAML
# --------------------------------------------------------------------------------------------

# Keys of the official tree that carry no meaning here (logging, GPU lists, debug dumps, cudnn flags,
# the unused STEM_INPLANES, values derived elsewhere). They are accepted and ignored.
_IGNORED_KEYS = frozenset(
    {
        "GPUS",
        "LOG_DIR",
        "DATA_DIR",
        "PIN_MEMORY",
        "RANK",
        "VERBOSE",
        "DIST_BACKEND",
        "MULTIPROCESSING_DISTRIBUTED",
        "CUDNN.BENCHMARK",
        "CUDNN.DETERMINISTIC",
        "CUDNN.ENABLED",
        "DEBUG.DEBUG",
        "DEBUG.SAVE_BATCH_IMAGES_GT",
        "DEBUG.SAVE_BATCH_IMAGES_PRED",
        "DEBUG.SAVE_HEATMAPS_GT",
        "DEBUG.SAVE_HEATMAPS_PRED",
        "DEBUG.SAVE_TAGMAPS_PRED",
        "MODEL.EXTRA.STEM_INPLANES",
        "FP16.STATIC_LOSS_SCALE",
        "FP16.DYNAMIC_LOSS_SCALE",
        "TRAIN.GAMMA1",
        "TRAIN.GAMMA2",
        "TRAIN.CHECKPOINT",
        "DATASET.DATASET_TEST",
    }
)

# official key -> (section, field). Stage and deconv keys are handled by prefix below.
_KEY_MAP: dict[str, tuple[str, str]] = {
    "OUTPUT_DIR": ("train", "output_dir"),
    "WORKERS": ("train", "workers"),
    "PRINT_FREQ": ("train", "print_freq"),
    "AUTO_RESUME": ("train", "auto_resume"),
    "FP16.ENABLED": ("train", "amp"),
    "MODEL.NAME": ("model", "name"),
    "MODEL.INIT_WEIGHTS": ("model", "init_weights"),
    "MODEL.PRETRAINED": ("model", "pretrained"),
    "MODEL.NUM_JOINTS": ("model", "num_joints"),
    "MODEL.TAG_PER_JOINT": ("model", "tag_per_joint"),
    "MODEL.SYNC_BN": ("model", "sync_bn"),
    "MODEL.EXTRA.PRETRAINED_LAYERS": ("model", "pretrained_layers"),
    "MODEL.EXTRA.FINAL_CONV_KERNEL": ("model", "final_conv_kernel"),
    "LOSS.NUM_STAGES": ("loss", "num_stages"),
    "LOSS.WITH_HEATMAPS_LOSS": ("loss", "with_heatmaps_loss"),
    "LOSS.HEATMAPS_LOSS_FACTOR": ("loss", "heatmaps_loss_factor"),
    "LOSS.WITH_AE_LOSS": ("loss", "with_ae_loss"),
    "LOSS.AE_LOSS_TYPE": ("loss", "ae_loss_type"),
    "LOSS.PUSH_LOSS_FACTOR": ("loss", "push_loss_factor"),
    "LOSS.PULL_LOSS_FACTOR": ("loss", "pull_loss_factor"),
    "DATASET.ROOT": ("data", "root"),
    "DATASET.DATASET": ("data", "dataset"),
    "DATASET.NUM_JOINTS": ("data", "num_joints"),
    "DATASET.MAX_NUM_PEOPLE": ("data", "max_num_people"),
    "DATASET.TRAIN": ("data", "train_split"),
    "DATASET.TEST": ("data", "test_split"),
    "DATASET.DATA_FORMAT": ("data", "data_format"),
    "DATASET.MAX_ROTATION": ("data", "max_rotation"),
    "DATASET.MIN_SCALE": ("data", "min_scale"),
    "DATASET.MAX_SCALE": ("data", "max_scale"),
    "DATASET.SCALE_TYPE": ("data", "scale_type"),
    "DATASET.MAX_TRANSLATE": ("data", "max_translate"),
    "DATASET.INPUT_SIZE": ("data", "input_size"),
    "DATASET.OUTPUT_SIZE": ("data", "output_size"),
    "DATASET.FLIP": ("data", "flip"),
    "DATASET.SIGMA": ("data", "sigma"),
    "DATASET.SCALE_AWARE_SIGMA": ("data", "scale_aware_sigma"),
    "DATASET.BASE_SIZE": ("data", "base_size"),
    "DATASET.BASE_SIGMA": ("data", "base_sigma"),
    "DATASET.INT_SIGMA": ("data", "int_sigma"),
    "DATASET.WITH_CENTER": ("data", "with_center"),
    "TRAIN.LR_FACTOR": ("train", "lr_factor"),
    "TRAIN.LR_STEP": ("train", "lr_step"),
    "TRAIN.LR": ("train", "lr"),
    "TRAIN.OPTIMIZER": ("train", "optimizer"),
    "TRAIN.MOMENTUM": ("train", "momentum"),
    "TRAIN.WD": ("train", "wd"),
    "TRAIN.NESTEROV": ("train", "nesterov"),
    "TRAIN.BEGIN_EPOCH": ("train", "begin_epoch"),
    "TRAIN.END_EPOCH": ("train", "end_epoch"),
    "TRAIN.RESUME": ("train", "auto_resume"),
    "TRAIN.IMAGES_PER_GPU": ("train", "images_per_gpu"),
    "TRAIN.SHUFFLE": ("train", "shuffle"),
    "TEST.IMAGES_PER_GPU": ("test", "images_per_gpu"),
    "TEST.FLIP_TEST": ("test", "flip_test"),
    "TEST.ADJUST": ("test", "adjust"),
    "TEST.REFINE": ("test", "refine"),
    "TEST.SCALE_FACTOR": ("test", "scale_factor"),
    "TEST.DETECTION_THRESHOLD": ("test", "detection_threshold"),
    "TEST.TAG_THRESHOLD": ("test", "tag_threshold"),
    "TEST.USE_DETECTION_VAL": ("test", "use_detection_val"),
    "TEST.IGNORE_TOO_MUCH": ("test", "ignore_too_much"),
    "TEST.MODEL_FILE": ("test", "model_file"),
    "TEST.IGNORE_CENTER": ("test", "ignore_center"),
    "TEST.NMS_KERNEL": ("test", "nms_kernel"),
    "TEST.NMS_PADDING": ("test", "nms_padding"),
    "TEST.PROJECT2IMAGE": ("test", "project2image"),
    "TEST.WITH_HEATMAPS": ("test", "with_heatmaps"),
    "TEST.WITH_AE": ("test", "with_ae"),
    "TEST.LOG_PROGRESS": ("test", "log_progress"),
}

_STAGE_KEYS = ("NUM_MODULES", "NUM_BRANCHES", "BLOCK", "NUM_BLOCKS", "NUM_CHANNELS", "FUSE_METHOD")
_DECONV_KEYS = ("NUM_DECONVS", "NUM_CHANNELS", "KERNEL_SIZE", "NUM_BASIC_BLOCKS", "CAT_OUTPUT")
_ALL_KEYS: frozenset[str] = frozenset(
    set(_KEY_MAP)
    | _IGNORED_KEYS
    | {f"MODEL.EXTRA.STAGE{s}.{k}" for s in (2, 3, 4) for k in _STAGE_KEYS}
    | {f"MODEL.EXTRA.DECONV.{k}" for k in _DECONV_KEYS}
)

# Official default.py values for keys a YAML may leave out (where they differ from our dataclass
# defaults, which follow the released experiment files).
_OFFICIAL_DEFAULTS: dict[str, Any] = {
    "OUTPUT_DIR": "",
    "WORKERS": 4,
    "PRINT_FREQ": 20,
    "AUTO_RESUME": False,
    "FP16.ENABLED": False,
    "MODEL.NAME": "pose_multi_resolution_net_v16",
    "MODEL.INIT_WEIGHTS": True,
    "MODEL.PRETRAINED": "",
    "MODEL.NUM_JOINTS": 17,
    "MODEL.TAG_PER_JOINT": True,
    "MODEL.SYNC_BN": False,
    "MODEL.EXTRA.PRETRAINED_LAYERS": ["*"],
    "MODEL.EXTRA.FINAL_CONV_KERNEL": 1,
    "LOSS.NUM_STAGES": 1,
    "LOSS.WITH_HEATMAPS_LOSS": (True,),
    "LOSS.HEATMAPS_LOSS_FACTOR": (1.0,),
    "LOSS.WITH_AE_LOSS": (True,),
    "LOSS.AE_LOSS_TYPE": "max",
    "LOSS.PUSH_LOSS_FACTOR": (0.001,),
    "LOSS.PULL_LOSS_FACTOR": (0.001,),
    "DATASET.ROOT": "",
    "DATASET.DATASET": "coco_kpt",
    "DATASET.NUM_JOINTS": 17,
    "DATASET.MAX_NUM_PEOPLE": 30,
    "DATASET.TRAIN": "train2017",
    "DATASET.TEST": "val2017",
    "DATASET.DATA_FORMAT": "jpg",
    "DATASET.MAX_ROTATION": 30,
    "DATASET.MIN_SCALE": 0.75,
    "DATASET.MAX_SCALE": 1.25,
    "DATASET.SCALE_TYPE": "short",
    "DATASET.MAX_TRANSLATE": 40,
    "DATASET.INPUT_SIZE": 512,
    "DATASET.OUTPUT_SIZE": [128, 256, 512],
    "DATASET.FLIP": 0.5,
    "DATASET.SIGMA": -1,
    "DATASET.SCALE_AWARE_SIGMA": False,
    "DATASET.BASE_SIZE": 256.0,
    "DATASET.BASE_SIGMA": 2.0,
    "DATASET.INT_SIGMA": False,
    "DATASET.WITH_CENTER": False,
    "TRAIN.LR_FACTOR": 0.1,
    "TRAIN.LR_STEP": [90, 110],
    "TRAIN.LR": 0.001,
    "TRAIN.OPTIMIZER": "adam",
    "TRAIN.MOMENTUM": 0.9,
    "TRAIN.WD": 0.0001,
    "TRAIN.NESTEROV": False,
    "TRAIN.BEGIN_EPOCH": 0,
    "TRAIN.END_EPOCH": 140,
    "TRAIN.IMAGES_PER_GPU": 32,
    "TRAIN.SHUFFLE": True,
    "TEST.IMAGES_PER_GPU": 32,
    "TEST.FLIP_TEST": False,
    "TEST.ADJUST": True,
    "TEST.REFINE": True,
    "TEST.SCALE_FACTOR": [1],
    "TEST.DETECTION_THRESHOLD": 0.2,
    "TEST.TAG_THRESHOLD": 1.0,
    "TEST.USE_DETECTION_VAL": True,
    "TEST.IGNORE_TOO_MUCH": False,
    "TEST.MODEL_FILE": "",
    "TEST.IGNORE_CENTER": True,
    "TEST.NMS_KERNEL": 3,
    "TEST.NMS_PADDING": 1,
    "TEST.PROJECT2IMAGE": False,
    "TEST.WITH_HEATMAPS": (True,),
    "TEST.WITH_AE": (True,),
    "TEST.LOG_PROGRESS": False,
}

_DATASET_NAMES: dict[str, DatasetName] = {
    "coco_kpt": "coco",
    "coco": "coco",
    "crowd_pose_kpt": "crowdpose",
    "crowd_pose": "crowdpose",
    "crowdpose": "crowdpose",
}


def _suggest(key: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def _literal(value: Any) -> Any:
    """yacs evaluates strings like ``'(True, False)'`` or ``'(0,)'`` as Python literals."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    return value


def _stage(flat: Mapping[str, Any], idx: int, default: StageConfig) -> StageConfig:
    p = f"MODEL.EXTRA.STAGE{idx}."
    if not any(k.startswith(p) for k in flat):
        return default
    return StageConfig(
        num_modules=int(flat.get(p + "NUM_MODULES", default.num_modules)),
        num_branches=int(flat.get(p + "NUM_BRANCHES", default.num_branches)),
        num_blocks=tuple(int(v) for v in flat.get(p + "NUM_BLOCKS", default.num_blocks)),
        num_channels=tuple(int(v) for v in flat.get(p + "NUM_CHANNELS", default.num_channels)),
        block=flat.get(p + "BLOCK", default.block),
        fuse_method=flat.get(p + "FUSE_METHOD", default.fuse_method),
    )


def _deconv(flat: Mapping[str, Any], default: DeconvConfig) -> DeconvConfig:
    p = "MODEL.EXTRA.DECONV."
    return DeconvConfig(
        num_deconvs=int(flat.get(p + "NUM_DECONVS", default.num_deconvs)),
        num_channels=tuple(int(v) for v in flat.get(p + "NUM_CHANNELS", default.num_channels)),
        kernel_size=tuple(int(v) for v in flat.get(p + "KERNEL_SIZE", default.kernel_size)),
        num_basic_blocks=int(flat.get(p + "NUM_BASIC_BLOCKS", default.num_basic_blocks)),
        cat_output=tuple(bool(v) for v in flat.get(p + "CAT_OUTPUT", default.cat_output)),
    )


def from_official_dict(tree: Mapping[str, Any], name: str = "yaml") -> Config:
    """Build a Config from an official (yacs-style) nested mapping, with official defaults."""
    flat = {k: _literal(v) for k, v in _flatten(tree).items()}
    for key in flat:
        if key not in _ALL_KEYS:
            raise ConfigError(f"unknown config key {key!r}{_suggest(key, _ALL_KEYS)}")
    values = {**_OFFICIAL_DEFAULTS, **flat}
    sections: dict[str, dict[str, Any]] = {"model": {}, "data": {}, "loss": {}, "train": {}, "test": {}}
    for key, (section, fname) in _KEY_MAP.items():
        if key in values:
            sections[section][fname] = values[key]
    d, m, t = sections["data"], sections["model"], sections["train"]
    # conversions with official meaning
    if d["dataset"] not in _DATASET_NAMES:
        raise ConfigError(f"unknown DATASET.DATASET {d['dataset']!r}; expected coco_kpt or crowd_pose_kpt")
    d["dataset"] = _DATASET_NAMES[d["dataset"]]
    out = d["output_size"]
    d["output_size"] = tuple(out) if isinstance(out, list | tuple) else (out,)
    if float(d["sigma"]) < 0:  # official: -1 means output_res / 64
        d["sigma"] = d["output_size"][0] / 64
    if d["with_center"]:  # update_config adds a center joint
        d["num_joints"] += 1
        m["num_joints"] = d["num_joints"]
    t["amp"] = "fp16" if t["amp"] else "none"
    # official dist_train resumes when AUTO_RESUME or TRAIN.RESUME is set
    t["auto_resume"] = bool(values["AUTO_RESUME"]) or bool(values.get("TRAIN.RESUME", False))
    base = ModelConfig()
    # the official network's width follows LOSS.WITH_AE_LOSS; here the model section says it
    m["tag_stages"] = sections["loss"].get("with_ae_loss", LossConfig().with_ae_loss)
    m["stage2"] = _stage(flat, 2, base.stage2)
    m["stage3"] = _stage(flat, 3, base.stage3)
    m["stage4"] = _stage(flat, 4, base.stage4)
    m["deconv"] = _deconv(flat, base.deconv)
    cfg = Config(
        model=_build(ModelConfig, m),
        data=_build(DataConfig, d),
        loss=_build(LossConfig, sections["loss"]),
        train=_build(TrainConfig, t),
        test=_build(TestConfig, sections["test"]),
        preset=name,
    )
    return validate(cfg)


def load_yaml(path: str | Path) -> Config:
    """Load an official HigherHRNet experiment YAML (or one written by :func:`dump_yaml`)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        tree = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse YAML {p}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {p} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    if not isinstance(tree, Mapping):
        raise ConfigError(f"config file {p} does not contain a mapping")
    if "model" in tree and isinstance(tree.get("model"), Mapping):  # our own dump format
        return from_dict(tree, name=p.stem)
    return from_official_dict(tree, name=p.stem)


def resolve(spec: str | Path | Config | None, overrides: Iterable[str] = ()) -> Config:
    """A preset name, a YAML path or a Config, then ``section.field=value`` overrides."""
    if isinstance(spec, Config):
        cfg = spec
    elif spec is None:
        cfg = preset("coco_w32_512")
    elif str(spec) in PRESETS:
        cfg = preset(str(spec))
    elif str(spec).endswith((".yaml", ".yml")) or Path(spec).exists():
        cfg = load_yaml(spec)
    else:
        raise ConfigError(f"{spec!r} is neither a preset{_suggest(str(spec), PRESETS)} nor a YAML file")
    return apply_overrides(cfg, overrides)


def layered(
    embedded: Config | None,
    config: str | Path | Config | None = None,
    overrides: Iterable[str] = (),
    fallback: Callable[[], Config] | None = None,
) -> Config:
    """Config precedence, one rule for every command: the config embedded in the artifact (checkpoint,
    ONNX file, engine), replaced by ``--config`` when given, then the ``--set`` overrides on top.

    ``fallback`` supplies the base when there is neither (an official checkpoint: by its joint count);
    without it the base is the ``coco_w32_512`` preset.
    """
    if config is not None:
        base = resolve(config)
    elif embedded is not None:
        base = embedded
    else:
        base = fallback() if fallback is not None else preset("coco_w32_512")
    return apply_overrides(base, overrides)


# --------------------------------------------------------------------------------------------
# dict round-trip and dotted overrides
# --------------------------------------------------------------------------------------------

T = TypeVar("T")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, f"{where}." if where else "")
    if origin is tuple:
        args = get_args(tp)
        if isinstance(value, str):
            value = _literal(value)
        if isinstance(value, str) and value.lstrip().startswith("["):  # YAML's flow list: [true, false]
            import yaml

            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                pass
        if not isinstance(value, list | tuple):
            value = (value,)
        inner = args[0]
        return tuple(_coerce(inner, v, where) for v in value)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if tp is bool:
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ConfigError(f"{where}: expected a boolean, got {value!r}")
        return bool(value)
    if tp in (int, float):
        raw = _literal(value) if isinstance(value, str) else value
        if isinstance(raw, str):  # nan, inf, 1_000 ...: what float() reads but literal_eval does not
            try:
                raw = float(raw)
            except ValueError:
                raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        if not math.isfinite(raw):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        if tp is int and raw != int(raw):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        return float(raw) if tp is float else int(raw)
    if tp is str:
        return "" if value is None else str(value)
    return value


def _build(cls: type[T], values: Mapping[str, Any], where: str = "") -> T:
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for k, v in values.items():
        if k not in names:
            raise ConfigError(f"unknown config key {where + k!r}{_suggest(k, names)}")
        kwargs[k] = _coerce(hints[k], v, where + k)
    return cls(**kwargs)


def from_dict(tree: Mapping[str, Any], name: str | None = None) -> Config:
    """Inverse of :meth:`Config.to_dict` (used for checkpoints and our own YAML dumps)."""
    values = dict(tree)
    if name is not None:
        values["preset"] = values.get("preset", name)
    return validate(_build(Config, values))


def dump_yaml(cfg: Config) -> str:
    import yaml

    def plain(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: plain(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [plain(v) for v in obj]
        return obj

    return str(yaml.safe_dump(plain(cfg.to_dict()), sort_keys=False))


def apply_overrides(cfg: Config, overrides: Iterable[str]) -> Config:
    """Apply ``section.field=value`` (or ``section.sub.field=value``) strings."""
    tree = cfg.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node: Any = tree
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                valid = list(node) if isinstance(node, dict) else []
                prefix = ".".join(parts[:i])
                full = [f"{prefix}.{v}" if prefix else v for v in valid]
                raise ConfigError(f"unknown config key {key!r}{_suggest(key, full)}")
            if i == len(parts) - 1:
                node[part] = raw.strip()
            else:
                node = node[part]
    return from_dict(tree)


# Ranges of the numeric fields, checked where values enter (YAML, --set, checkpoints, artifacts): (low, high),
# inclusive; None is unbounded. Every value must also be finite (_coerce). Sizes have upper bounds so no value can
# ask for unbounded memory or time; rates and factors only a sign (a huge lr is a legitimate way to test the
# NaN guard).
_BIG = 1 << 20
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "model.num_joints": (1, 1024),
    "model.stem_channels": (1, 4096),
    "model.tag_dim": (1, 16),
    "model.layer1_blocks": (1, 64),
    "model.final_conv_kernel": (1, 15),
    "data.num_joints": (1, 1024),
    "data.max_num_people": (1, 10_000),
    "data.input_size": (32, 4096),
    "data.output_size": (1, 4096),
    "data.max_rotation": (0, 360),
    "data.min_scale": (1e-3, 100),
    "data.max_scale": (1e-3, 100),
    "data.max_translate": (0, 4096),
    "data.flip": (0, 1),
    "data.sigma": (1e-3, 1000),
    "data.base_size": (1e-3, 1e6),
    "data.base_sigma": (1e-3, 1000),
    "loss.num_stages": (1, 8),
    "loss.push_loss_factor": (0, None),
    "loss.pull_loss_factor": (0, None),
    "loss.heatmaps_loss_factor": (0, None),
    "train.lr": (0, None),
    "train.lr_factor": (0, None),
    "train.lr_step": (0, _BIG),
    "train.warmup": (0, 1),
    "train.minutes": (0, 1e7),
    "train.momentum": (0, 1),
    "train.wd": (0, None),
    "train.begin_epoch": (0, _BIG),
    "train.end_epoch": (0, _BIG),
    "train.images_per_gpu": (1, 4096),
    "train.workers": (0, 1024),
    "train.print_freq": (1, None),
    "train.seed": (0, 2**63 - 1),
    "train.val_every": (0, _BIG),
    "test.images_per_gpu": (1, 4096),
    "test.scale_factor": (1e-3, 8),
    "test.detection_threshold": (0, 1),
    "test.tag_threshold": (0, None),
    "test.nms_kernel": (1, 255),
    "test.nms_padding": (0, 127),
    "test.max_persons": (0, 10_000),
    "test.pose_nms": (0, 1),
    "test.max_input_pixels": (1, 1 << 28),
    "test.max_input_side": (32, 1 << 15),
}
_STAGE_RANGES: dict[str, tuple[float, float]] = {
    "num_modules": (1, 64),
    "num_branches": (1, 8),
    "num_blocks": (1, 64),
    "num_channels": (1, 4096),
}


def _check_range(where: str, value: Any, low: float | None, high: float | None) -> None:
    for v in value if isinstance(value, tuple) else (value,):
        if (low is not None and v < low) or (high is not None and v > high):
            span = f"{low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
            raise ConfigError(f"{where}={v!r} is out of range ({span})")


def check_ranges(cfg: Config) -> None:
    """ConfigError naming the first numeric field outside its range (:data:`_RANGES`)."""
    for key, (low, high) in _RANGES.items():
        section, name = key.split(".")
        _check_range(key, getattr(getattr(cfg, section), name), low, high)
    for stage in ("stage2", "stage3", "stage4"):
        st = getattr(cfg.model, stage)
        for name, (low, high) in _STAGE_RANGES.items():
            _check_range(f"model.{stage}.{name}", getattr(st, name), low, high)
    d = cfg.model.deconv
    _check_range("model.deconv.num_deconvs", d.num_deconvs, 0, 4)
    _check_range("model.deconv.num_channels", d.num_channels, 1, 4096)
    _check_range("model.deconv.kernel_size", d.kernel_size, 2, 4)
    _check_range("model.deconv.num_basic_blocks", d.num_basic_blocks, 0, 64)
    if cfg.data.min_scale > cfg.data.max_scale:
        raise ConfigError(f"data.min_scale={cfg.data.min_scale} is above data.max_scale={cfg.data.max_scale}")
    if cfg.test.nms_kernel % 2 == 0:
        raise ConfigError(f"test.nms_kernel={cfg.test.nms_kernel} must be odd")


def validate(cfg: Config) -> Config:
    """Cross-field checks the official code asserts (check_config) plus our own, and every numeric range."""
    check_ranges(cfg)
    loss, test, model, data = cfg.loss, cfg.test, cfg.model, cfg.data
    for name in ("with_heatmaps_loss", "heatmaps_loss_factor", "with_ae_loss", "push_loss_factor", "pull_loss_factor"):
        if len(getattr(loss, name)) != loss.num_stages:
            raise ConfigError(f"loss.{name} must have loss.num_stages={loss.num_stages} entries")
    for name in ("with_heatmaps", "with_ae"):
        if len(getattr(test, name)) != loss.num_stages:
            raise ConfigError(f"test.{name} must have loss.num_stages={loss.num_stages} entries")
    if model.num_joints != data.num_joints:
        raise ConfigError(f"model.num_joints={model.num_joints} differs from data.num_joints={data.num_joints}")
    if data.input_size % 32:
        raise ConfigError(f"data.input_size={data.input_size} must be a multiple of 32")
    if model.deconv.num_deconvs + 1 != loss.num_stages:
        raise ConfigError("loss.num_stages must equal model.deconv.num_deconvs + 1")
    if len(model.tag_stages) != loss.num_stages:
        raise ConfigError(f"model.tag_stages must have loss.num_stages={loss.num_stages} entries")
    for i, (ae, has_tags) in enumerate(zip(loss.with_ae_loss, model.tag_stages, strict=True)):
        if ae and not has_tags:
            raise ConfigError(f"loss.with_ae_loss[{i}] needs tag channels: set model.tag_stages[{i}]=true")
    if 1.0 not in test.scale_factor:
        raise ConfigError("test.scale_factor must contain 1.0: tags are taken at scale 1 (docs/official.md B14)")
    for st in (model.stage2, model.stage3, model.stage4):
        if not (len(st.num_blocks) == len(st.num_channels) == st.num_branches):
            raise ConfigError("stage num_blocks/num_channels must have num_branches entries")
    return cfg


__all__ = [
    "COCO_JOINT_ORDER",
    "Config",
    "DataConfig",
    "DeconvConfig",
    "LossConfig",
    "ModelConfig",
    "PRESETS",
    "StageConfig",
    "TestConfig",
    "TrainConfig",
    "apply_overrides",
    "dump_yaml",
    "field",
    "from_dict",
    "from_official_dict",
    "layered",
    "load_yaml",
    "preset",
    "resolve",
]
