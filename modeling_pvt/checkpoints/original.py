"""PVT v1 in the layout of the original release (github.com/whai362/PVT), with its parameter names: the classifier
of `classification/pvt.py` (`patch_embed1.proj`, `pos_embed1`, `block1.0.attn.kv`, `cls_token`, `norm`, `head`), the
dense backbone of `segmentation/pvt.py` (no CLS token, no norm, no head; `pos_embed4` keeps an unused CLS slot), and
the paper's Semantic FPN as mmseg builds it (`backbone.`, `neck.lateral_convs.0.conv`, `decode_head.scale_heads.1.0.bn`,
`decode_head.conv_seg`), and the paper's RetinaNet as mmdet builds it (`bbox_head.retina_cls`, …) with its test-time
post-processing.

It exists so that `scripts/convert_checkpoint.py --verify` can run an original checkpoint exactly as its authors
did (loaded with `strict=True`) and compare it with the converted model. It is inference-only: dropout and
stochastic depth, which are identities at evaluation time, are left out. Not part of the Hub remote code.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, sr_ratio: int, norm_eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def forward(self, x, H, W):
        B, N, C = x.shape
        q = self.q(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        if self.sr_ratio > 1:
            x = self.norm(self.sr(x.permute(0, 2, 1).reshape(B, C, H, W)).reshape(B, C, -1).permute(0, 2, 1))
        kv = self.kv(x).reshape(B, -1, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, qkv_bias, sr_ratio, norm_eps, sr_norm_eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, sr_ratio, sr_norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, H, W):
        x = x + self.attn(self.norm1(x), H, W)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, grid: tuple[int, int], patch_size: int, in_chans: int, embed_dim: int, norm_eps: float):
        super().__init__()
        self.H, self.W = grid
        self.num_patches = self.H * self.W
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def forward(self, x):
        x = self.proj(x)
        H, W = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), (H, W)


def get_pos_embed(pos_embed, patch_embed, H, W, stage1_num_patches):
    # The release's rule, kept verbatim (classification and segmentation): it compares every stage with stage 1's
    # stored patch count.
    if H * W == stage1_num_patches:
        return pos_embed
    grid = pos_embed.reshape(1, patch_embed.H, patch_embed.W, -1).permute(0, 3, 1, 2)
    return F.interpolate(grid, size=(H, W), mode="bilinear").reshape(1, -1, H * W).permute(0, 2, 1)


class OriginalPyramidVisionTransformer(nn.Module):
    """The original `PyramidVisionTransformer`, sized from a `PvtConfig` (its per-stage lists, eps values and
    `image_size`) with a `num_classes`-way head."""

    def __init__(self, config, num_classes: int):
        super().__init__()
        self.num_stages = config.num_stages
        for i in range(self.num_stages):
            in_chans = config.num_channels if i == 0 else config.hidden_sizes[i - 1]
            dim = config.hidden_sizes[i]
            patch_embed = PatchEmbed(
                config.position_grid(i), config.patch_sizes[i], in_chans, dim, config.conv_layer_norm_eps
            )
            num_tokens = patch_embed.num_patches + (1 if i == self.num_stages - 1 else 0)
            setattr(self, f"patch_embed{i + 1}", patch_embed)
            setattr(self, f"pos_embed{i + 1}", nn.Parameter(torch.zeros(1, num_tokens, dim)))
            blocks = nn.ModuleList(
                Block(
                    dim,
                    config.num_attention_heads[i],
                    config.mlp_ratios[i],
                    config.qkv_bias,
                    config.sr_ratios[i],
                    config.layer_norm_eps,
                    config.conv_layer_norm_eps,
                )
                for _ in range(config.depths[i])
            )
            setattr(self, f"block{i + 1}", blocks)
        self.norm = nn.LayerNorm(config.hidden_sizes[-1], eps=config.layer_norm_eps)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_sizes[-1]))
        self.head = nn.Linear(config.hidden_sizes[-1], num_classes) if num_classes > 0 else nn.Identity()

    def _get_pos_embed(self, pos_embed, patch_embed, H, W):
        return get_pos_embed(pos_embed, patch_embed, H, W, self.patch_embed1.num_patches)

    def forward_features(self, x):
        """The normalised CLS token, the input of the head."""
        B = x.shape[0]
        for i in range(self.num_stages):
            patch_embed = getattr(self, f"patch_embed{i + 1}")
            pos_embed = getattr(self, f"pos_embed{i + 1}")
            x, (H, W) = patch_embed(x)
            if i == self.num_stages - 1:
                x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
                pos_embed = torch.cat(
                    (pos_embed[:, :1], self._get_pos_embed(pos_embed[:, 1:], patch_embed, H, W)), dim=1
                )
            else:
                pos_embed = self._get_pos_embed(pos_embed, patch_embed, H, W)
            x = x + pos_embed
            for block in getattr(self, f"block{i + 1}"):
                x = block(x, H, W)
            if i != self.num_stages - 1:
                x = x.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()
        return self.norm(x)[:, 0]

    def forward(self, x):
        return self.head(self.forward_features(x))


class OriginalDensePyramidVisionTransformer(nn.Module):
    """`segmentation/pvt.py`'s backbone: the classifier's stages without CLS token, final norm and head; stage 4 adds
    only `pos_embed4[:, 1:]`, resized like every other stage. Returns the four NCHW maps."""

    def __init__(self, config):
        super().__init__()
        self.num_stages = config.num_stages
        classifier = OriginalPyramidVisionTransformer(config, num_classes=0)
        for i in range(self.num_stages):
            for name in ("patch_embed", "pos_embed", "block"):
                setattr(self, f"{name}{i + 1}", getattr(classifier, f"{name}{i + 1}"))

    def forward(self, x):
        B, outs = x.shape[0], []
        for i in range(self.num_stages):
            patch_embed = getattr(self, f"patch_embed{i + 1}")
            pos_embed = getattr(self, f"pos_embed{i + 1}")
            x, (H, W) = patch_embed(x)
            pos_embed = pos_embed[:, 1:] if i == self.num_stages - 1 else pos_embed
            x = x + get_pos_embed(pos_embed, patch_embed, H, W, self.patch_embed1.num_patches)
            for block in getattr(self, f"block{i + 1}"):
                x = block(x, H, W)
            x = x.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs


class ConvModule(nn.Module):
    """mmcv's ConvModule: `conv`, then (with a norm) `bn` without conv bias and `activate` (ReLU)."""

    def __init__(self, in_channels, out_channels, kernel_size, with_norm: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=not with_norm)
        self.with_norm = with_norm
        if with_norm:
            self.bn = nn.BatchNorm2d(out_channels)
            self.activate = nn.ReLU()

    def forward(self, x):
        x = self.conv(x)
        return self.activate(self.bn(x)) if self.with_norm else x


class Upsample(nn.Module):
    """mmseg's Upsample: the output size is the input size times the factor, resized bilinearly."""

    def forward(self, x):
        return F.interpolate(x, size=[2 * side for side in x.shape[-2:]], mode="bilinear", align_corners=False)


class FPN(nn.Module):
    """mmseg's FPN with the Semantic FPN config (no norm, no activation, no extra levels)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.lateral_convs = nn.ModuleList(ConvModule(c, out_channels, 1, with_norm=False) for c in in_channels)
        self.fpn_convs = nn.ModuleList(ConvModule(out_channels, out_channels, 3, with_norm=False) for _ in in_channels)

    def forward(self, inputs):
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        for i in range(len(laterals) - 1, 0, -1):
            coarser = F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], mode="nearest")
            laterals[i - 1] = laterals[i - 1] + coarser
        return [conv(x) for conv, x in zip(self.fpn_convs, laterals)]


class FPNHead(nn.Module):
    """mmseg's FPNHead (`scale_heads`, `conv_seg`; the Dropout2d before `conv_seg` is an identity in eval mode)."""

    def __init__(self, in_channels, channels, feature_strides, num_classes):
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for i, stride in enumerate(feature_strides):
            head_length = max(1, int(math.log2(stride) - math.log2(feature_strides[0])))
            layers = []
            for k in range(head_length):
                layers.append(ConvModule(in_channels[i] if k == 0 else channels, channels, 3, with_norm=True))
                if stride != feature_strides[0]:
                    layers.append(Upsample())
            self.scale_heads.append(nn.Sequential(*layers))
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, inputs):
        output = self.scale_heads[0](inputs[0])
        for i in range(1, len(inputs)):
            upsampled = self.scale_heads[i](inputs[i])
            output = output + F.interpolate(upsampled, size=output.shape[2:], mode="bilinear", align_corners=False)
        return self.conv_seg(output)


class OriginalSemanticFpn(nn.Module):
    """mmseg's EncoderDecoder of `configs/sem_fpn/PVT/fpn_pvt_*_ade20k_40k.py`, sized from a `PvtConfig`; returns the
    decode head's logits (1/4 of the input size), as mmseg's `encode_decode` before its final resize."""

    def __init__(self, config, num_classes: int):
        super().__init__()
        self.backbone = OriginalDensePyramidVisionTransformer(config)
        self.neck = FPN(config.hidden_sizes, config.fpn_hidden_size)
        strides = [config.stage_stride(i) for i in range(config.num_stages)]
        in_channels = [config.fpn_hidden_size] * config.num_stages
        self.decode_head = FPNHead(in_channels, config.decoder_hidden_size, strides, num_classes)

    def forward(self, x):
        return self.decode_head(self.neck(self.backbone(x)))


# ---------------------------------------------------------------------------------------------------------------
# The paper's RetinaNet as MMDetection 2.13 builds `detection/configs/retinanet_pvt_*_fpn_1x_coco.py` (names as in its
# checkpoints: `backbone.`, `neck.lateral_convs.0.conv`, `neck.fpn_convs.4.conv`, `bbox_head.cls_convs.0.conv`,
# `bbox_head.retina_cls`, `bbox_head.retina_reg`), and its test-time `get_bboxes` + `multiclass_nms` with mmcv's
# box-by-box NMS, so that `--verify` can compare detections as well as raw outputs.


class RetinaConvModule(nn.Module):
    """mmcv's ConvModule without a norm: a conv with bias, then ReLU when `relu`."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, relu=False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)
        self.relu = relu

    def forward(self, x):
        x = self.conv(x)
        return F.relu(x) if self.relu else x


class RetinaFPN(nn.Module):
    """mmdet's FPN(start_level=1, add_extra_convs='on_input', num_outs=5): P3-P5 from C3-C5, P6 from C5, P7 from P6."""

    def __init__(self, in_channels, out_channels, start_level=1, num_outs=5):
        super().__init__()
        self.start_level = start_level
        self.num_outs = num_outs
        used = in_channels[start_level:]
        self.lateral_convs = nn.ModuleList(RetinaConvModule(c, out_channels, 1) for c in used)
        self.fpn_convs = nn.ModuleList(RetinaConvModule(out_channels, out_channels, 3) for _ in used)
        for i in range(num_outs - len(used)):
            self.fpn_convs.append(RetinaConvModule(used[-1] if i == 0 else out_channels, out_channels, 3, stride=2))

    def forward(self, inputs):
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            coarser = F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], mode="nearest")
            laterals[i - 1] = laterals[i - 1] + coarser
        outs = [self.fpn_convs[i](laterals[i]) for i in range(len(laterals))]
        outs.append(self.fpn_convs[len(laterals)](inputs[-1]))
        for i in range(len(laterals) + 1, self.num_outs):
            outs.append(self.fpn_convs[i](outs[-1]))
        return outs


def retina_base_anchors(stride, ratios, octave_base_scale, scales_per_octave):
    """mmdet AnchorGenerator.gen_single_level_base_anchors (scale-major, centre offset 0)."""
    scales = torch.Tensor(
        [2 ** (i / scales_per_octave) * octave_base_scale for i in range(scales_per_octave)]
    )
    h_ratios = torch.sqrt(torch.Tensor(ratios))
    w_ratios = 1 / h_ratios
    ws = (stride * w_ratios[:, None] * scales[None, :]).view(-1)
    hs = (stride * h_ratios[:, None] * scales[None, :]).view(-1)
    return torch.stack([0.0 - 0.5 * ws, 0.0 - 0.5 * hs, 0.0 + 0.5 * ws, 0.0 + 0.5 * hs], dim=-1)


def retina_delta2bbox(rois, deltas, max_shape, wh_ratio_clip=16 / 1000):
    """mmdet 2.13 delta2bbox (means 0, stds 1), boxes clipped to `max_shape` = (height, width)."""
    px, py = (rois[:, 0] + rois[:, 2]) * 0.5, (rois[:, 1] + rois[:, 3]) * 0.5
    pw, ph = rois[:, 2] - rois[:, 0], rois[:, 3] - rois[:, 1]
    dx, dy, dw, dh = deltas.unbind(1)
    max_ratio = abs(math.log(wh_ratio_clip))
    dx_width, dy_height = pw * dx, ph * dy
    gw, gh = pw * dw.clamp(-max_ratio, max_ratio).exp(), ph * dh.clamp(-max_ratio, max_ratio).exp()
    gx, gy = px + dx_width, py + dy_height
    x1, y1, x2, y2 = gx - gw * 0.5, gy - gh * 0.5, gx + gw * 0.5, gy + gh * 0.5
    x1, x2 = x1.clamp(0, max_shape[1]), x2.clamp(0, max_shape[1])
    y1, y2 = y1.clamp(0, max_shape[0]), y2.clamp(0, max_shape[0])
    return torch.stack([x1, y1, x2, y2], dim=-1)


def mmcv_nms(boxes, scores, iou_threshold):
    """mmcv's nms_cpu: boxes visited by descending score (ties by index); a kept box drops every later box whose IoU
    with it exceeds the threshold."""
    order = scores.sort(descending=True, stable=True).indices
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    select = torch.ones(len(order), dtype=torch.bool)
    for position in range(len(order)):
        if not select[position]:
            continue
        i, later = order[position], order[position + 1 :]
        w = (torch.min(boxes[i, 2], boxes[later, 2]) - torch.max(boxes[i, 0], boxes[later, 0])).clamp(min=0)
        h = (torch.min(boxes[i, 3], boxes[later, 3]) - torch.max(boxes[i, 1], boxes[later, 1])).clamp(min=0)
        inter = w * h
        select[position + 1 :] &= ~(inter / (areas[i] + areas[later] - inter) > iou_threshold)
    return order[select]


def mmcv_batched_nms(boxes, scores, labels, iou_threshold, split_thr=10000):
    """mmcv's batched_nms: one NMS over label-offset boxes below `split_thr` boxes, else one NMS per label."""
    if len(boxes) < split_thr:
        offsets = labels.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
        return mmcv_nms(boxes + offsets[:, None], scores, iou_threshold)
    kept = torch.zeros(len(boxes), dtype=torch.bool)
    for label in torch.unique(labels):
        members = (labels == label).nonzero().view(-1)
        kept[members[mmcv_nms(boxes[members], scores[members], iou_threshold)]] = True
    keep = kept.nonzero().view(-1)
    return keep[scores[keep].sort(descending=True, stable=True).indices]


class RetinaHead(nn.Module):
    """mmdet's RetinaHead (4 x conv + ReLU per branch, `retina_cls`, `retina_reg`) and its test-time `get_bboxes`."""

    def __init__(self, num_classes, in_channels, feat_channels, stacked_convs, strides, ratios, octave_base_scale,
                 scales_per_octave):
        super().__init__()
        self.num_classes = num_classes
        self.strides = strides
        self.base_anchors = [retina_base_anchors(s, ratios, octave_base_scale, scales_per_octave) for s in strides]
        num_anchors = len(ratios) * scales_per_octave
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for i in range(stacked_convs):
            channels = in_channels if i == 0 else feat_channels
            self.cls_convs.append(RetinaConvModule(channels, feat_channels, 3, relu=True))
            self.reg_convs.append(RetinaConvModule(channels, feat_channels, 3, relu=True))
        last = feat_channels if stacked_convs else in_channels
        self.retina_cls = nn.Conv2d(last, num_anchors * num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(last, num_anchors * 4, 3, padding=1)

    def forward(self, feats):
        cls_scores, bbox_preds = [], []
        for x in feats:
            cls_feat = reg_feat = x
            for conv in self.cls_convs:
                cls_feat = conv(cls_feat)
            for conv in self.reg_convs:
                reg_feat = conv(reg_feat)
            cls_scores.append(self.retina_cls(cls_feat))
            bbox_preds.append(self.retina_reg(reg_feat))
        return cls_scores, bbox_preds

    def grid_anchors(self, featmap_sizes):
        anchors = []
        for base, (h, w), stride in zip(self.base_anchors, featmap_sizes, self.strides):
            shift_x = torch.arange(0, w) * stride
            shift_y = torch.arange(0, h) * stride
            xx, yy = shift_x.repeat(len(shift_y)), shift_y.view(-1, 1).repeat(1, len(shift_x)).view(-1)
            shifts = torch.stack([xx, yy, xx, yy], dim=-1).type_as(base)
            anchors.append((base[None, :, :] + shifts[:, None, :]).view(-1, 4))
        return anchors

    def get_bboxes(self, cls_scores, bbox_preds, index, img_shape, scale_factor, nms_pre=1000, score_thr=0.05,
                   iou_threshold=0.5, max_per_img=100):
        """Image `index`'s detections (boxes, scores, labels), best first, boxes divided by `scale_factor` (w, h)."""
        anchors = self.grid_anchors([score.shape[-2:] for score in cls_scores])
        mlvl_bboxes, mlvl_scores = [], []
        for cls_score, bbox_pred, level_anchors in zip(cls_scores, bbox_preds, anchors):
            scores = cls_score[index].permute(1, 2, 0).reshape(-1, self.num_classes).float().sigmoid()
            deltas = bbox_pred[index].permute(1, 2, 0).reshape(-1, 4).float()
            if 0 < nms_pre < len(scores):
                topk = scores.max(dim=1).values.topk(nms_pre).indices
                scores, deltas, level_anchors = scores[topk], deltas[topk], level_anchors[topk]
            mlvl_bboxes.append(retina_delta2bbox(level_anchors, deltas, img_shape))
            mlvl_scores.append(scores)
        bboxes = torch.cat(mlvl_bboxes) / torch.tensor([scale_factor[0], scale_factor[1]] * 2, dtype=torch.float32)
        scores = torch.cat(mlvl_scores)
        labels = torch.arange(self.num_classes).repeat(len(scores))
        bboxes = bboxes[:, None].expand(-1, self.num_classes, 4).reshape(-1, 4)
        scores = scores.reshape(-1)
        valid = (scores > score_thr).nonzero().squeeze(1)
        bboxes, scores, labels = bboxes[valid], scores[valid], labels[valid]
        if len(bboxes) == 0:
            return bboxes, scores, labels
        keep = mmcv_batched_nms(bboxes, scores, labels, iou_threshold)[:max_per_img]
        return bboxes[keep], scores[keep], labels[keep]


class OriginalRetinaNet(nn.Module):
    """mmdet's RetinaNet of `detection/configs/retinanet_pvt_*_fpn_1x_coco.py`, sized from a `PvtConfig` (widths,
    head depth and anchors from its detection fields); `forward` returns the per-level (cls_scores, bbox_preds)."""

    def __init__(self, config, num_classes: int):
        super().__init__()
        self.backbone = OriginalDensePyramidVisionTransformer(config)
        self.neck = RetinaFPN(config.hidden_sizes, config.fpn_hidden_size)
        strides = [config.stage_stride(i) for i in range(1, config.num_stages)]
        strides += [strides[-1] * 2, strides[-1] * 4]
        self.bbox_head = RetinaHead(
            num_classes,
            config.fpn_hidden_size,
            config.detection_head_hidden_size,
            config.detection_head_num_convs,
            strides,
            config.anchor_ratios,
            config.anchor_octave_base_scale,
            config.anchor_scales_per_octave,
        )

    def forward(self, x):
        return self.bbox_head(self.neck(self.backbone(x)))


__all__ = [
    "OriginalPyramidVisionTransformer",
    "OriginalDensePyramidVisionTransformer",
    "OriginalSemanticFpn",
    "OriginalRetinaNet",
]
