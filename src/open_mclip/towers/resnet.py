"""OpenAI's ModifiedResNet image tower (RN50 ... RN50x64), open_clip-compatible parameter layout."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModifiedResNetConfig
from .base import Tower, params_of


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> (avg-pool when strided) -> 1x1 with 4x expansion; anti-aliased downsampling."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or in_planes != out_planes:
            self.downsample = nn.Sequential(
                OrderedDict(
                    [
                        ("-1", nn.AvgPool2d(stride)),
                        ("0", nn.Conv2d(in_planes, out_planes, 1, bias=False)),
                        ("1", nn.BatchNorm2d(out_planes)),
                    ]
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.avgpool(self.act2(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.act3(out + identity)


class AttentionPool2d(nn.Module):
    """Attention pooling: the mean feature queries all spatial features (plus itself)."""

    def __init__(self, spatial: int, width: int, heads: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spatial**2 + 1, width) / width**0.5)
        self.k_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.c_proj = nn.Linear(width, output_dim)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2).transpose(1, 2)  # (batch, hw, width)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # (batch, 1 + hw, width)
        x = x + self.positional_embedding.to(x.dtype)
        batch, tokens, width = x.shape
        head_dim = width // self.heads
        # only the mean token's output is used, so only its query is computed
        q = self.q_proj(x[:, :1]).view(batch, 1, self.heads, head_dim).transpose(1, 2)  # (batch, heads, 1, hd)
        k = self.k_proj(x).view(batch, tokens, self.heads, head_dim).transpose(1, 2)  # (batch, heads, tokens, hd)
        v = self.v_proj(x).view(batch, tokens, self.heads, head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # (batch, heads, 1, hd)
        return self.c_proj(out.transpose(1, 2).reshape(batch, width))  # (batch, output_dim)


class ModifiedResNet(Tower):
    """ResNet with a 3-conv stem, average-pool downsampling and an attention-pooling head (OpenAI CLIP).

    `set_channels_last()` keeps the convolution weights and each batch of images channels-last (NHWC): an RN50
    training step ran 1.23x faster in fp32 (1.18x in bf16, a probe) on a 2-core Xeon (docs/performance.md)."""

    channels_last_capable = True
    channels_last = False

    def __init__(self, cfg: ModifiedResNetConfig, *, embed_dim: int):
        super().__init__()
        width = cfg.width
        self.output_dim = embed_dim
        self.image_size = cfg.image_size  # an int, as open_clip's ModifiedResNet keeps it
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.act3 = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(2)
        in_planes = width
        for i, depth in enumerate(cfg.layers):
            planes = width * 2**i
            blocks = [Bottleneck(in_planes, planes, stride=1 if i == 0 else 2)]
            in_planes = planes * Bottleneck.expansion
            blocks += [Bottleneck(in_planes, planes) for _ in range(1, depth)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        heads = width * 32 // cfg.head_width
        self.attnpool = AttentionPool2d(cfg.image_size // 32, width * 32, heads, embed_dim)
        self.init_weights()

    def init_weights(self) -> None:
        std = self.attnpool.c_proj.in_features**-0.5
        for proj in (self.attnpool.q_proj, self.attnpool.k_proj, self.attnpool.v_proj, self.attnpool.c_proj):
            nn.init.normal_(proj.weight, std=std)
        for stage in self.stages():
            for name, param in stage.named_parameters():
                if name.endswith("bn3.weight"):  # each residual branch starts as identity
                    nn.init.zeros_(param)

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def lock_groups(self):
        stem = params_of(self.conv1, self.bn1, self.conv2, self.bn2, self.conv3, self.bn3)
        return stem, [params_of(stage) for stage in self.stages()], params_of(self.attnpool)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:  # (open_clip's ModifiedResNet silently ignores the request)
            reason = "recomputing its BatchNorm layers in training mode would update their running statistics twice"
            raise self.no_grad_checkpointing(reason)

    def no_weight_decay(self) -> set[str]:
        return {"attnpool.positional_embedding"}

    def set_channels_last(self, enable: bool = True) -> None:
        self.channels_last = enable
        self.to(memory_format=torch.channels_last if enable else torch.contiguous_format)  # the 4-d conv weights

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        x = self.act1(self.bn1(self.conv1(images)))
        x = self.act2(self.bn2(self.conv2(x)))
        x = self.avgpool(self.act3(self.bn3(self.conv3(x))))  # (batch, width, h / 4, w / 4)
        for stage in self.stages():
            x = stage(x)  # (batch, width * 32, h / 32, w / 32) after the last
        return self.attnpool(x)
