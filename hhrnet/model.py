"""HigherHRNet: HRNet backbone + deconvolution head with two-resolution heatmaps and associative-embedding tags.

Paper: Cheng et al., "HigherHRNet: Scale-Aware Representation Learning for Bottom-Up Human Pose Estimation",
CVPR 2020 (arXiv 1908.10357). Backbone: Sun et al., "Deep High-Resolution Representation Learning" (HRNet).

Module names, registration order and shapes reproduce the official implementation so that official
checkpoints load with ``strict=True`` (checked against ``shared/golden/state_dict_spec_*.tsv``), and outputs
match it (``shared/golden/forward_formula_*.npz``). The network is built from explicit typed arguments;
:meth:`HigherHRNet.from_config` is the only place that reads a :class:`~hhrnet.config.Config`.

Outputs for an input (B, 3, H, W), H and W multiples of 32, J joints:
  * stage 0 (stride 4): (B, J + J, H/4, W/4) heatmaps then per-joint tags
  * stage 1 (stride 2): (B, J, H/2, W/2)     heatmaps only
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from hhrnet.errors import InputError

if TYPE_CHECKING:
    from hhrnet.config import Config, DeconvConfig, StageConfig

BN_MOMENTUM = 0.1


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)  # (B, C, h, w)
        out = self.relu(self.bn1(self.conv1(x)))  # (B, C, h, w)
        out = self.bn2(self.conv2(out))  # (B, C, h, w)
        return self.relu(out + identity)  # (B, C, h, w)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)  # (B, 4C, h, w)
        out = self.relu(self.bn1(self.conv1(x)))  # (B, C, h, w)
        out = self.relu(self.bn2(self.conv2(out)))  # (B, C, h, w)
        out = self.bn3(self.conv3(out))  # (B, 4C, h, w)
        return self.relu(out + identity)  # (B, 4C, h, w)


BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {"BASIC": BasicBlock, "BOTTLENECK": Bottleneck}


def make_layer(block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int, blocks: int) -> nn.Sequential:
    """``blocks`` residual blocks; the first gets a 1x1 conv + BN shortcut if the width changes."""
    downsample = None
    if inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, kernel_size=1, bias=False),
            nn.BatchNorm2d(planes * block.expansion, momentum=BN_MOMENTUM),
        )
    layers: list[nn.Module] = [block(inplanes, planes, 1, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches at strides 4, 8, ... followed by all-to-all fusion (sum) and ReLU."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: Sequence[int],
        in_channels: Sequence[int],
        channels: Sequence[int],
        multi_scale_output: bool = True,
    ) -> None:
        super().__init__()
        self.num_branches = len(channels)
        self.multi_scale_output = multi_scale_output
        self.branches = nn.ModuleList(
            make_layer(block, in_channels[i], channels[i], num_blocks[i]) for i in range(self.num_branches)
        )
        self.out_channels = [c * block.expansion for c in channels]
        self.fuse_layers = self._make_fuse_layers() if self.num_branches > 1 else None
        self.relu = nn.ReLU(inplace=False)

    def _make_fuse_layers(self) -> nn.ModuleList:
        ch = self.out_channels
        n_out = self.num_branches if self.multi_scale_output else 1
        fuse = nn.ModuleList()
        for i in range(n_out):
            row: list[nn.Module | None] = []
            for j in range(self.num_branches):
                if j > i:  # lower resolution -> 1x1 conv, BN, nearest upsample
                    row.append(
                        nn.Sequential(
                            nn.Conv2d(ch[j], ch[i], 1, 1, 0, bias=False),
                            nn.BatchNorm2d(ch[i]),
                            nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
                        )
                    )
                elif j == i:
                    row.append(None)
                else:  # higher resolution -> (i - j) strided 3x3 convs, ReLU between them
                    steps: list[nn.Module] = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        cout = ch[i] if last else ch[j]
                        layer: list[nn.Module] = [conv3x3(ch[j], cout, 2), nn.BatchNorm2d(cout)]
                        if not last:
                            layer.append(nn.ReLU(inplace=True))
                        steps.append(nn.Sequential(*layer))
                    row.append(nn.Sequential(*steps))
            fuse.append(nn.ModuleList(row))  # type: ignore[arg-type]  # None keeps official key indices
        return fuse

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs, strict=True)]  # [(B, C_i, H/2^(i+2), ...)]
        if self.fuse_layers is None:
            return xs
        fused = []
        for i, row in enumerate(self.fuse_layers):
            assert isinstance(row, nn.ModuleList)
            y = xs[0] if i == 0 else row[0](xs[0])  # (B, C_i, h_i, w_i)
            for j in range(1, self.num_branches):
                y = y + (xs[j] if i == j else row[j](xs[j]))  # (B, C_i, h_i, w_i)
            fused.append(self.relu(y))
        return fused


def make_transition(pre: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
    """Adapt branch widths (3x3 conv) and create new lower-resolution branches (strided 3x3 convs)."""
    layers: list[nn.Module | None] = []
    for i, cout in enumerate(cur):
        if i < len(pre):
            if cout != pre[i]:
                layers.append(nn.Sequential(conv3x3(pre[i], cout), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)))
            else:
                layers.append(None)
        else:
            steps = []
            for k in range(i + 1 - len(pre)):
                cin = pre[-1]
                out = cout if k == i - len(pre) else cin
                steps.append(nn.Sequential(conv3x3(cin, out, 2), nn.BatchNorm2d(out), nn.ReLU(inplace=True)))
            layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)  # type: ignore[arg-type]  # None = branch passes through


def make_stage(stage: StageConfig, in_channels: Sequence[int], multi_scale_output: bool = True) -> nn.Sequential:
    block = BLOCKS[stage.block]
    modules = []
    channels = list(in_channels)
    for m in range(stage.num_modules):
        last_single = not multi_scale_output and m == stage.num_modules - 1
        module = HighResolutionModule(block, stage.num_blocks, channels, stage.num_channels, not last_single)
        channels = module.out_channels
        modules.append(module)
    return nn.Sequential(*modules)


def _deconv_padding(kernel: int) -> tuple[int, int]:
    """(padding, output_padding) that make a stride-2 transposed conv exactly double the size."""
    table = {4: (1, 0), 3: (1, 1), 2: (0, 0)}
    if kernel not in table:
        raise ValueError(f"unsupported deconv kernel size {kernel}; expected 2, 3 or 4")
    return table[kernel]


def _check_input_size(x: Tensor) -> None:
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        return
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    if is_exporting is not None and is_exporting():
        return
    if x.dim() != 4 or x.shape[1] != 3:
        raise InputError(f"expected an input of shape (B, 3, H, W), got {tuple(x.shape)}")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h % 32 or w % 32:
        raise InputError(f"input height and width must be multiples of 32, got {h}x{w}")


class HigherHRNet(nn.Module):
    """HRNet backbone (stride-4 output) + HigherHRNet deconvolution head."""

    def __init__(
        self,
        *,
        num_joints: int,
        stage2: StageConfig,
        stage3: StageConfig,
        stage4: StageConfig,
        deconv: DeconvConfig,
        tag_per_joint: bool = True,
        tag_dim: int = 1,
        with_ae: Sequence[bool] = (True, False),
        stem_channels: int = 64,
        layer1_blocks: int = 4,
        final_conv_kernel: int = 1,
        tag_position: bool = False,
    ) -> None:
        super().__init__()
        if len(with_ae) != deconv.num_deconvs + 1:
            raise ValueError("with_ae needs one entry per output stage (num_deconvs + 1)")
        self.num_joints = num_joints
        self.tag_per_joint = tag_per_joint
        self.tag_dim = tag_dim
        self.with_ae = tuple(with_ae)
        # stem: two stride-2 3x3 convs, then Bottlenecks at stride 4
        self.conv1 = nn.Conv2d(3, stem_channels, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(stem_channels, stem_channels, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem_channels, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_layer(Bottleneck, stem_channels, stem_channels, layer1_blocks)
        stem_out = stem_channels * Bottleneck.expansion

        def widths(stage: StageConfig) -> list[int]:
            return [c * BLOCKS[stage.block].expansion for c in stage.num_channels]

        self.transition1 = make_transition([stem_out], widths(stage2))
        self.stage2 = make_stage(stage2, widths(stage2))
        self.transition2 = make_transition(widths(stage2), widths(stage3))
        self.stage3 = make_stage(stage3, widths(stage3))
        self.transition3 = make_transition(widths(stage3), widths(stage4))
        self.stage4 = make_stage(stage4, widths(stage4), multi_scale_output=False)

        tag_channels = (num_joints if tag_per_joint else 1) * tag_dim  # D groups: channel J + d * (J or 1) + j
        out_channels = [num_joints + (tag_channels if ae else 0) for ae in self.with_ae]
        features = widths(stage4)[0]
        pad = 1 if final_conv_kernel == 3 else 0
        finals = [nn.Conv2d(features, out_channels[0], final_conv_kernel, 1, pad)]
        deconvs = []
        cin = features
        for i in range(deconv.num_deconvs):
            if deconv.cat_output[i]:
                cin += out_channels[i]
            cout, kernel = deconv.num_channels[i], deconv.kernel_size[i]
            padding, output_padding = _deconv_padding(kernel)
            layers: list[nn.Module] = [
                nn.Sequential(
                    nn.ConvTranspose2d(cin, cout, kernel, 2, padding, output_padding, bias=False),
                    nn.BatchNorm2d(cout, momentum=BN_MOMENTUM),
                    nn.ReLU(inplace=True),
                )
            ]
            layers += [nn.Sequential(BasicBlock(cout, cout)) for _ in range(deconv.num_basic_blocks)]
            deconvs.append(nn.Sequential(*layers))
            finals.append(nn.Conv2d(cout, out_channels[i + 1], final_conv_kernel, 1, pad))
            cin = cout
        self.final_layers = nn.ModuleList(finals)
        self.deconv_layers = nn.ModuleList(deconvs)
        self.cat_output = tuple(deconv.cat_output[: deconv.num_deconvs])
        # not official: each tag channel also gets a learned linear function of the pixel's position (x, y in
        # stride-4 map pixels), so a tag can say where its person is (tag_position, benchmarks/TRAINING.md)
        self.tag_position = (
            nn.ModuleList([nn.Conv2d(2, tag_channels, 1, bias=False) if ae else nn.Identity() for ae in self.with_ae])
            if tag_position
            else None
        )
        self.init_weights()

    @classmethod
    def from_config(cls, cfg: Config) -> HigherHRNet:
        m = cfg.model
        return cls(
            num_joints=m.num_joints,
            stage2=m.stage2,
            stage3=m.stage3,
            stage4=m.stage4,
            deconv=m.deconv,
            tag_per_joint=m.tag_per_joint,
            tag_dim=m.tag_dim,
            with_ae=m.tag_stages,
            stem_channels=m.stem_channels,
            layer1_blocks=m.layer1_blocks,
            final_conv_kernel=m.final_conv_kernel,
            tag_position=m.tag_position,
        )

    def init_weights(self) -> None:
        """Official initialisation: conv/deconv weights ~ N(0, 0.001), biases 0, BN weight 1 / bias 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.normal_(module.weight, std=0.001)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    @staticmethod
    def _through(transition: nn.ModuleList, xs: list[Tensor]) -> list[Tensor]:
        # a new branch is made from the last existing branch; a None entry passes its branch through
        out = []
        for i, t in enumerate(transition):
            if t is None:
                out.append(xs[i])
            else:
                out.append(t(xs[i] if i < len(xs) else xs[-1]))
        return out

    def forward(self, x: Tensor) -> list[Tensor]:
        _check_input_size(x)
        x = self.relu(self.bn1(self.conv1(x)))  # (B, 64, H/2, W/2)
        x = self.relu(self.bn2(self.conv2(x)))  # (B, 64, H/4, W/4)
        x = self.layer1(x)  # (B, 256, H/4, W/4)
        ys = self.stage2(self._through(self.transition1, [x]))  # [(B, C, H/4, W/4), (B, 2C, H/8, W/8)]
        ys = self.stage3(self._through(self.transition2, ys))  # 3 branches, strides 4..16
        ys = self.stage4(self._through(self.transition3, ys))  # [(B, C, H/4, W/4)]
        feat = ys[0]  # (B, C, H/4, W/4)
        y = self._with_position(self.final_layers[0](feat), 0)  # (B, 2J, H/4, W/4)
        outputs = [y]
        for i, deconv in enumerate(self.deconv_layers):
            if self.cat_output[i]:
                feat = torch.cat((feat, y), 1)  # (B, C + 2J, H/4, W/4)
            feat = deconv(feat)  # (B, C', H/2, W/2)
            y = self._with_position(self.final_layers[i + 1](feat), i + 1)  # (B, J, H/2, W/2)
            outputs.append(y)
        return outputs

    def _with_position(self, y: Tensor, stage: int) -> Tensor:
        """Add the learned position term to the tag channels of stage ``stage`` (when ``tag_position``)."""
        if self.tag_position is None or not self.with_ae[stage]:
            return y
        h, w = y.shape[-2], y.shape[-1]
        step = 1.0 / (1 << stage)  # coordinates in stride-4 pixels at every stage
        xs = torch.arange(w, device=y.device, dtype=y.dtype) * step
        ys = torch.arange(h, device=y.device, dtype=y.dtype) * step
        grid = torch.stack((xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w))).unsqueeze(0)  # (1, 2, H, W)
        j = self.num_joints
        return torch.cat((y[:, :j], y[:, j:] + self.tag_position[stage](grid)), 1)


def build_model(cfg: Config) -> HigherHRNet:
    return HigherHRNet.from_config(cfg)


def checkpoint_filter_fn(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Normalise upstream key layouts to this model's names.

    Handles DDP (``module.``) and the official fp16 wrapper ``nn.Sequential(tofp16(), net, tofp32())``
    (``1.``), possibly nested, and casts half-precision tensors back to float32.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        k = key
        changed = True
        while changed:
            changed = False
            for prefix in ("module.", "1."):
                if k.startswith(prefix):
                    k = k[len(prefix) :]
                    changed = True
        if isinstance(value, Tensor) and value.dtype == torch.float16:
            value = value.float()
        out[k] = value
    return out
