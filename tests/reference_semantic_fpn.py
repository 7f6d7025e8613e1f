"""An independent Semantic FPN on the original dense PVT, written from the descriptions only (issue 9: the
original `segmentation/pvt.py` backbone and mmseg's `FPN` + `FPNHead` as the paper's config builds them), with
mmseg's parameter names so that its `state_dict()` is an mmseg checkpoint. Used only to check our model."""

import math

import torch
import torch.nn.functional as F
from reference_pvt import PyramidVisionTransformer
from torch import nn


class DensePyramidVisionTransformer(PyramidVisionTransformer):
    """segmentation/pvt.py: no CLS token, no final norm, no head; stage 4 adds `pos_embed4[:, 1:]` interpolated from
    the stored grid like the other stages; returns the four NCHW maps."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        del self.cls_token, self.norm, self.head

    def forward(self, x):
        B, outs = x.shape[0], []
        for i in range(self.num_stages):
            patch_embed = getattr(self, f"patch_embed{i + 1}")
            pos_embed = getattr(self, f"pos_embed{i + 1}")
            x, (H, W) = patch_embed(x)
            if i == self.num_stages - 1:
                pos_embed = pos_embed[:, 1:]
            x = x + self._get_pos_embed(pos_embed, patch_embed, H, W)
            for blk in getattr(self, f"block{i + 1}"):
                x = blk(x, H, W)
            x = x.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs


class ConvModule(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, norm):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=not norm)
        self.bn = nn.BatchNorm2d(out_channels) if norm else None

    def forward(self, x):
        x = self.conv(x)
        return x if self.bn is None else F.relu(self.bn(x))


class FPN(nn.Module):
    def __init__(self, in_channels, out_channels=256):
        super().__init__()
        self.lateral_convs = nn.ModuleList([ConvModule(c, out_channels, 1, norm=False) for c in in_channels])
        self.fpn_convs = nn.ModuleList([ConvModule(out_channels, out_channels, 3, norm=False) for _ in in_channels])

    def forward(self, inputs):
        laterals = [lateral_conv(inputs[i]) for i, lateral_conv in enumerate(self.lateral_convs)]
        for i in reversed(range(1, len(laterals))):
            laterals[i - 1] += F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], mode="nearest")
        return [self.fpn_convs[i](laterals[i]) for i in range(len(laterals))]


class FPNHead(nn.Module):
    def __init__(self, num_classes, in_channels=256, channels=128, feature_strides=(4, 8, 16, 32), dropout=0.1):
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for stride in feature_strides:
            length = max(1, int(math.log2(stride) - math.log2(feature_strides[0])))
            layers = []
            for k in range(length):
                layers.append(ConvModule(in_channels if k == 0 else channels, channels, 3, norm=True))
                if stride != feature_strides[0]:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, inputs):
        output = self.scale_heads[0](inputs[0])
        for i in range(1, len(inputs)):
            output = output + F.interpolate(
                self.scale_heads[i](inputs[i]), size=output.shape[2:], mode="bilinear", align_corners=False
            )
        return self.conv_seg(self.dropout(output))


class SemanticFPN(nn.Module):
    """mmseg's EncoderDecoder; `forward` returns the decode head's logits (1/4 of the input size)."""

    def __init__(self, num_classes, fpn_channels=256, head_channels=128, **backbone_kwargs):
        super().__init__()
        self.backbone = DensePyramidVisionTransformer(**backbone_kwargs)
        self.neck = FPN(list(backbone_kwargs.get("embed_dims", (64, 128, 320, 512))), fpn_channels)
        self.decode_head = FPNHead(num_classes, fpn_channels, head_channels)

    def forward(self, x):
        return self.decode_head(self.neck(self.backbone(x)))


def randomise_norms(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Non-trivial norm weights and BatchNorm running statistics, so that a skipped or swapped norm shows."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
                module.weight.add_(torch.randn(module.weight.shape, generator=generator) * 0.1)
                module.bias.add_(torch.randn(module.bias.shape, generator=generator) * 0.1)
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
                module.num_batches_tracked.fill_(1000)
    return model
