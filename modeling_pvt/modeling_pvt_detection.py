"""PVT + RetinaNet, the paper's COCO detector (Table 2), as the original
`detection/configs/retinanet_pvt_*_fpn_1x_coco.py` builds it on MMDetection 2.13: the dense PVT, mmdet's `FPN` (start level 1, P6 from C5, P7 from P6) and `RetinaHead`
with its `AnchorGenerator`, `DeltaXYWHBBoxCoder`, `MaxIoUAssigner`, sigmoid focal loss and L1 loss.

Boxes are absolute (x0, y0, x1, y1) pixels of the model's input (the resized image), as in mmdet. Post-processing
(per-level top-k, class-wise NMS, rescaling to the original image) is `PvtImageProcessor.post_process_object_detection`.
Also Hub remote code: imports only torch, transformers, the standard library and this folder's PVT files."""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_pvt import PvtConfig
from .modeling_pvt import PvtEncoder, PvtPreTrainedModel, _rename_keys

# The original config's FPN: the stride-4 map is unused (`start_level=1`), and `add_extra_convs='on_input'` with
# `num_outs=5` adds two stride-2 levels on top: P3-P7, strides 8-128.
FPN_START_LEVEL = 1
FPN_EXTRA_LEVELS = 2
# `DeltaXYWHBBoxCoder`: predicted log-scale changes are clamped to |ln(16 / 1000)| before exp (`wh_ratio_clip`).
# Its target means (0) and stds (1) are the identity and left out.
MAX_LOG_SCALE = abs(math.log(16 / 1000))
# mmdet's `bbox_overlaps` floors the union at this, so degenerate boxes give IoU 0 rather than 0/0.
IOU_EPS = 1e-6
# Ground-truth boxes may poke out of the image by this many pixels (rounding after a resize); they are clipped to it.
BOX_TOLERANCE = 1.0


# The original RetinaNet checkpoints (mmdet's single-stage detector: `backbone.` = the dense original PVT, whose
# `pos_embed4` keeps the CLS slot; ConvModules hold `conv`) -> the names of `PvtForObjectDetection.state_dict()`.
MMDET_KEY_MAP = (
    (r"^backbone\.patch_embed(\d+)\.(proj|norm)\.", "encoder.stages.{s}.embeddings.{2}."),
    (r"^backbone\.pos_embed(\d+)$", "encoder.stages.{s}.embeddings.position_embeddings"),
    (r"^backbone\.block(\d+)\.(\d+)\.", "encoder.stages.{s}.blocks.{2}."),
    (r"^neck\.(lateral_convs|fpn_convs)\.(\d+)\.conv\.", "neck.{1}.{2}."),
    (r"^bbox_head\.(cls_convs|reg_convs)\.(\d+)\.conv\.", "head.{1}.{2}."),
    (r"^bbox_head\.retina_cls\.", "head.classifier."),
    (r"^bbox_head\.retina_reg\.", "head.box_regressor."),
)


def convert_mmdet_state_dict(state_dict: dict) -> dict:
    """An original RetinaNet checkpoint (mmdet layout, `retinanet_pvt_s_fpn_1x_coco.pth` …) -> our names."""
    return _rename_keys(state_dict, MMDET_KEY_MAP, "mmdet RetinaNet")


class PvtFpnConv2d(nn.Conv2d):
    """A convolution of the detection FPN: Xavier-uniform weights and zero bias, as mmdet's `FPN.init_cfg`."""


class PvtHeadConv2d(nn.Conv2d):
    """A convolution of the RetinaNet head: N(0, 0.01) weights and zero bias, as mmdet's `RetinaHead.init_cfg`."""


class PvtClassifierConv2d(PvtHeadConv2d):
    """The head's classifier: like the other head convolutions, but its bias starts every anchor at the prior."""


class PvtRetinaFpn(nn.Module):
    """mmdet's `FPN` as RetinaNet configures it: 1x1 laterals (bias) on C3-C5, nearest top-down upsampling to the
    finer map's size + add, a 3x3 conv per level; P6 = 3x3 stride-2 conv on C5 (the backbone map, not P5), P7 = 3x3
    stride-2 conv on P6 with no activation between. No norms, no activations. Names are mmdet's without `.conv`."""

    def __init__(self, config):
        super().__init__()
        width = config.fpn_hidden_size
        in_channels = config.hidden_sizes[FPN_START_LEVEL:]
        self.lateral_convs = nn.ModuleList(PvtFpnConv2d(channels, width, kernel_size=1) for channels in in_channels)
        self.fpn_convs = nn.ModuleList(PvtFpnConv2d(width, width, kernel_size=3, padding=1) for _ in in_channels)
        for level in range(FPN_EXTRA_LEVELS):
            channels = in_channels[-1] if level == 0 else width
            self.fpn_convs.append(PvtFpnConv2d(channels, width, kernel_size=3, stride=2, padding=1))

    def forward(self, feature_maps: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        inputs = feature_maps[FPN_START_LEVEL:]
        laterals = [conv(feature_map) for conv, feature_map in zip(self.lateral_convs, inputs)]
        for level in range(len(laterals) - 1, 0, -1):
            finer = laterals[level - 1]
            laterals[level - 1] = finer + F.interpolate(laterals[level], size=finer.shape[-2:], mode="nearest")
        outputs = [conv(lateral) for conv, lateral in zip(self.fpn_convs, laterals)]
        extra_input = inputs[-1]
        for conv in self.fpn_convs[len(laterals) :]:
            extra_input = conv(extra_input)
            outputs.append(extra_input)
        return outputs


class PvtRetinaHead(nn.Module):
    """mmdet's `RetinaHead`, shared by every level: two branches of `detection_head_num_convs` x (3x3 conv + ReLU),
    no norm, then a 3x3 classifier (A x num_labels sigmoid logits) and a 3x3 box regressor (A x 4 deltas)."""

    def __init__(self, config):
        super().__init__()
        width = config.detection_head_hidden_size
        num_anchors = len(config.anchor_ratios) * config.anchor_scales_per_octave
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for index in range(config.detection_head_num_convs):
            channels = config.fpn_hidden_size if index == 0 else width
            self.cls_convs.append(PvtHeadConv2d(channels, width, kernel_size=3, padding=1))
            self.reg_convs.append(PvtHeadConv2d(channels, width, kernel_size=3, padding=1))
        channels = width if config.detection_head_num_convs else config.fpn_hidden_size
        self.classifier = PvtClassifierConv2d(channels, num_anchors * config.num_labels, kernel_size=3, padding=1)
        self.box_regressor = PvtHeadConv2d(channels, num_anchors * 4, kernel_size=3, padding=1)
        self.num_labels = config.num_labels

    def forward(self, fpn_maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, num_labels) logits and (B, N, 4) deltas; N runs over levels, then rows, columns and anchors."""
        logits, deltas = [], []
        for fpn_map in fpn_maps:
            cls_features = reg_features = fpn_map
            for conv in self.cls_convs:
                cls_features = F.relu(conv(cls_features))
            for conv in self.reg_convs:
                reg_features = F.relu(conv(reg_features))
            batch_size = fpn_map.shape[0]
            # Channel a * num_labels + c is anchor a's class c, as in mmdet's reshape of `retina_cls`.
            logits.append(self.classifier(cls_features).permute(0, 2, 3, 1).reshape(batch_size, -1, self.num_labels))
            deltas.append(self.box_regressor(reg_features).permute(0, 2, 3, 1).reshape(batch_size, -1, 4))
        return torch.cat(logits, dim=1), torch.cat(deltas, dim=1)


def anchor_strides(config) -> list[int]:
    """Strides of the detection levels: the backbone's from `FPN_START_LEVEL` on (8, 16, 32), then x2 per extra."""
    strides = [config.stage_stride(index) for index in range(FPN_START_LEVEL, config.num_stages)]
    return strides + [strides[-1] * 2 ** (level + 1) for level in range(FPN_EXTRA_LEVELS)]


def base_anchors(config, stride: int) -> torch.Tensor:
    """mmdet `AnchorGenerator.gen_single_level_base_anchors` with centre offset 0: (A, 4) boxes around (0, 0), index
    ratio * scales_per_octave + scale, height/width = ratio. Same float32 operations in the same order as mmdet."""
    octave_scales = [2 ** (index / config.anchor_scales_per_octave) for index in range(config.anchor_scales_per_octave)]
    # mmdet multiplies in float64 (numpy) and stores float32.
    scales = torch.tensor([scale * config.anchor_octave_base_scale for scale in octave_scales], dtype=torch.float64)
    scales = scales.float()
    h_ratios = torch.sqrt(torch.tensor(config.anchor_ratios, dtype=torch.float32))
    w_ratios = 1 / h_ratios
    widths = (stride * w_ratios[:, None] * scales[None, :]).view(-1)
    heights = (stride * h_ratios[:, None] * scales[None, :]).view(-1)
    return torch.stack([-0.5 * widths, -0.5 * heights, 0.5 * widths, 0.5 * heights], dim=-1)


def grid_anchors(config, level_sizes: list[tuple[int, int]], device=None) -> torch.Tensor:
    """(N, 4) float32 anchors of every level, each shifted to (x * stride, y * stride) row-major, anchors innermost."""
    anchors = []
    for (height, width), stride in zip(level_sizes, anchor_strides(config)):
        base = base_anchors(config, stride).to(device)
        shift_x = torch.arange(width, device=device) * stride
        shift_y = torch.arange(height, device=device) * stride
        shift_yy, shift_xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
        shifts = torch.stack([shift_xx, shift_yy, shift_xx, shift_yy], dim=-1).reshape(-1, 4).float()
        anchors.append((base[None, :, :] + shifts[:, None, :]).reshape(-1, 4))
    return torch.cat(anchors)


def valid_anchor_flags(config, level_sizes, image_sizes: torch.Tensor) -> torch.Tensor:
    """(B, N) mmdet `valid_flags`: anchors whose cell lies within each image's padded shape (its size rounded up to the
    backbone's total stride, as mmdet's `Pad(size_divisor=32)` leaves it). Anchors over another image's padding in a
    batch take no part in the loss."""
    divisor = config.stage_stride(config.num_stages - 1)
    padded = torch.div(image_sizes + divisor - 1, divisor, rounding_mode="floor") * divisor
    num_anchors = len(config.anchor_ratios) * config.anchor_scales_per_octave
    flags = []
    for (height, width), stride in zip(level_sizes, anchor_strides(config)):
        valid = torch.div(padded + stride - 1, stride, rounding_mode="floor")  # ceil(pad / stride), (B, 2)
        rows = torch.arange(height, device=image_sizes.device)[None, :] < valid[:, :1]
        columns = torch.arange(width, device=image_sizes.device)[None, :] < valid[:, 1:]
        cells = (rows[:, :, None] & columns[:, None, :]).reshape(len(image_sizes), -1)
        flags.append(cells.repeat_interleave(num_anchors, dim=1))
    return torch.cat(flags, dim=1)


def encode_boxes(anchors: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """mmdet `bbox2delta` (means 0, stds 1): (dx, dy, dw, dh) that move `anchors` onto `boxes`, both (..., 4)."""
    anchor_x, anchor_y = (anchors[..., 0] + anchors[..., 2]) * 0.5, (anchors[..., 1] + anchors[..., 3]) * 0.5
    anchor_w, anchor_h = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
    box_x, box_y = (boxes[..., 0] + boxes[..., 2]) * 0.5, (boxes[..., 1] + boxes[..., 3]) * 0.5
    box_w, box_h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    dx, dy = (box_x - anchor_x) / anchor_w, (box_y - anchor_y) / anchor_h
    return torch.stack([dx, dy, torch.log(box_w / anchor_w), torch.log(box_h / anchor_h)], dim=-1)


def decode_boxes(anchors: torch.Tensor, deltas: torch.Tensor, image_sizes: torch.Tensor | None = None) -> torch.Tensor:
    """mmdet 2.13 `delta2bbox`: anchors (N, 4) moved by deltas (B, N, 4), dw/dh clamped to +-|ln 0.016|, then clipped
    to [0, width] x [0, height] of each image (`image_sizes` (B, 2) as (height, width)). Same operation order."""
    x0, y0, x1, y1 = anchors.unbind(-1)
    center_x, center_y = (x0 + x1) * 0.5, (y0 + y1) * 0.5
    width, height = x1 - x0, y1 - y0
    dx, dy, dw, dh = deltas.unbind(-1)
    dx_width, dy_height = width * dx, height * dy
    dw, dh = dw.clamp(min=-MAX_LOG_SCALE, max=MAX_LOG_SCALE), dh.clamp(min=-MAX_LOG_SCALE, max=MAX_LOG_SCALE)
    new_width, new_height = width * dw.exp(), height * dh.exp()
    new_x, new_y = center_x + dx_width, center_y + dy_height
    boxes = torch.stack(
        [new_x - new_width * 0.5, new_y - new_height * 0.5, new_x + new_width * 0.5, new_y + new_height * 0.5], dim=-1
    )
    if image_sizes is None:
        return boxes
    limits = image_sizes.to(boxes.dtype).flip(-1).repeat(1, 2)[:, None, :]  # (B, 1, 4): w, h, w, h
    boxes = torch.where(boxes < 0, boxes.new_zeros(()), boxes)
    return torch.where(boxes > limits, limits, boxes)


def box_iou(boxes: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """(M, N) IoU as mmdet's `bbox_overlaps` (mode iou, offset 0, union floored at 1e-6)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    other_area = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    top_left = torch.max(boxes[:, None, :2], others[None, :, :2])
    bottom_right = torch.min(boxes[:, None, 2:], others[None, :, 2:])
    overlap = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    union = area[:, None] + other_area[None, :] - overlap
    return overlap / torch.max(union, union.new_tensor([IOU_EPS]))


def assign_anchors(config, anchors: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """mmdet `MaxIoUAssigner` for one image: per anchor -1 (ignored), 0 (background) or k + 1 (box k). Background
    below `detection_neg_iou_threshold`, positive from `detection_pos_iou_threshold`; then every anchor that ties a
    box's best IoU (if that is >= `detection_min_pos_iou`) goes to that box, later boxes overriding earlier ones, as
    mmdet's loop over boxes does. Invalid anchors are ignored."""
    assigned = torch.full((len(anchors),), -1, dtype=torch.long, device=anchors.device)
    if len(boxes) == 0:
        return torch.where(valid, 0, assigned)
    overlaps = box_iou(boxes, anchors[valid])  # (G, valid anchors)
    best, best_box = overlaps.max(dim=0)
    valid_assigned = assigned[valid]
    valid_assigned[(best >= 0) & (best < config.detection_neg_iou_threshold)] = 0
    positive = best >= config.detection_pos_iou_threshold
    valid_assigned[positive] = best_box[positive] + 1
    box_best = overlaps.max(dim=1).values
    ties = (overlaps == box_best[:, None]) & (box_best[:, None] >= config.detection_min_pos_iou)
    # The highest box index among the ties of each anchor wins (the last assignment of mmdet's loop).
    last_tie = (ties * torch.arange(1, len(boxes) + 1, device=anchors.device)[:, None]).max(dim=0).values
    valid_assigned = torch.where(last_tie > 0, last_tie, valid_assigned)
    assigned[valid] = valid_assigned
    return assigned


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Element-wise focal loss (Lin et al.) as mmdet's `py_sigmoid_focal_loss` computes it."""
    probabilities = logits.sigmoid()
    pt = (1 - probabilities) * targets + probabilities * (1 - targets)
    focal_weight = (alpha * targets + (1 - alpha) * (1 - targets)) * pt.pow(gamma)
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * focal_weight


@dataclass
class PvtObjectDetectionOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor`, *optional*): `loss_dict["loss_cls"] + loss_dict["loss_bbox"]`, when `labels` are given.
    loss_dict (`dict`, *optional*): the focal classification loss and the L1 box loss, each summed over anchors and
        divided by the number of positive anchors (at least 1 per image), as mmdet's RetinaNet.
    logits (`torch.FloatTensor` of shape `(batch_size, num_anchors, num_labels)`): sigmoid class logits per anchor,
        anchors of all levels (strides 8-128) concatenated: level, then row, column and anchor shape.
    pred_boxes (`torch.FloatTensor` of shape `(batch_size, num_anchors, 4)`): the decoded boxes, absolute
        (x0, y0, x1, y1) pixels of the model input, clipped to each image's unpadded size (float32). Not DETR's
        normalised (cx, cy, w, h).
    box_deltas (`torch.FloatTensor` of shape `(batch_size, num_anchors, 4)`): the raw regression (dx, dy, dw, dh).
    anchors (`torch.FloatTensor` of shape `(batch_size, num_anchors, 4)`): the anchor boxes (the same for every image).
    num_anchors_per_level (`torch.LongTensor` of shape `(batch_size, num_levels)`): how many of the anchors each level
        has, for per-level selection in post-processing.
    image_sizes (`torch.LongTensor` of shape `(batch_size, 2)`): each image's unpadded (height, width) in the input,
        from `pixel_mask` (else the input size).
    hidden_states, attentions: as for `PvtModel` (the four backbone maps; attention weights on request).
    """

    loss: torch.FloatTensor | None = None
    loss_dict: dict | None = None
    logits: torch.FloatTensor | None = None
    pred_boxes: torch.FloatTensor | None = None
    box_deltas: torch.FloatTensor | None = None
    anchors: torch.FloatTensor | None = None
    num_anchors_per_level: torch.LongTensor | None = None
    image_sizes: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class PvtForObjectDetection(PvtPreTrainedModel):
    """PVT + FPN + RetinaHead, the paper's RetinaNet. `pipeline("object-detection")` and
    `PvtImageProcessor.post_process_object_detection` turn its outputs into scored, labelled boxes."""

    # Parts of classifier and segmentation checkpoints that a detector has no use for (its backbone loads).
    _keys_to_ignore_on_load_unexpected = [r"^norm\.", r"^classifier\.", r"\.cls_token$", r"^decode_head\."]

    def __init__(self, config: PvtConfig):
        super().__init__(config)
        self.encoder = PvtEncoder(config, use_cls_token=config.uses_cls_token(dense=True))
        self.neck = PvtRetinaFpn(config)
        self.head = PvtRetinaHead(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """mmdet's initialisation: Xavier-uniform FPN convs, N(0, 0.01) head convs, all biases 0 except the
        classifier's, -log((1 - p) / p) so that every anchor starts at probability `detection_prior_prob`."""
        # Per convolution, by its class: transformers never passes modules without parameters of their own (the neck,
        # the head) to `_init_weights` in remote code.
        if isinstance(module, PvtFpnConv2d):
            init.xavier_uniform_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, PvtHeadConv2d):
            init.normal_(module.weight, std=0.01)
            prior = self.config.detection_prior_prob
            bias = -math.log((1 - prior) / prior) if isinstance(module, PvtClassifierConv2d) else 0.0
            init.constant_(module.bias, bias)
        else:
            super()._init_weights(module)

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        labels: list[dict] | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> PvtObjectDetectionOutput | tuple:
        r"""
        pixel_mask (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
            1 on image pixels, 0 on padding (the detection processor's bottom/right padding). Boxes are clipped to each
            image's unpadded size and, in the loss, anchors beyond its padded-to-32 shape are ignored, as in mmdet.
        labels (`list[dict]`, *optional*):
            One dict per image, transformers' detection convention: `class_labels` (LongTensor `(n,)`, 0-based, no
            background class) and `boxes` (FloatTensor `(n, 4)`): absolute (x0, y0, x1, y1) pixels in the model
            input's frame (the resized image), not normalised. `n` may be 0 (every anchor is then background).
        """
        requests = self._requests(output_attentions, output_hidden_states, return_dict)
        pixel_values = self._checked(pixel_values)
        image_sizes = self._image_sizes(pixel_values, pixel_mask)
        _, feature_maps, attentions = self.encoder(pixel_values, requests.output_attentions)
        fpn_maps = self.neck(feature_maps)
        logits, box_deltas = self.head(fpn_maps)
        level_sizes = [tuple(fpn_map.shape[-2:]) for fpn_map in fpn_maps]
        anchors = grid_anchors(self.config, level_sizes, device=logits.device)
        # Boxes in float32 whatever the model's dtype: bfloat16 cannot hold pixel coordinates of an 800x1333 image.
        pred_boxes = decode_boxes(anchors, box_deltas.float(), image_sizes)
        num_anchors = len(self.config.anchor_ratios) * self.config.anchor_scales_per_octave
        counts = torch.tensor([height * width * num_anchors for height, width in level_sizes], device=logits.device)
        loss = loss_dict = None
        if labels is not None:
            targets = self._checked_labels(labels, image_sizes)
            valid = valid_anchor_flags(self.config, level_sizes, image_sizes)
            loss_dict = self.detection_loss(logits.float(), box_deltas.float(), anchors, targets, valid)
            loss = loss_dict["loss_cls"] + loss_dict["loss_bbox"]
        batch_size = len(pixel_values)
        output = PvtObjectDetectionOutput(
            loss=loss,
            loss_dict=loss_dict,
            logits=logits,
            pred_boxes=pred_boxes,
            box_deltas=box_deltas,
            # Batch-first like the other fields, so that pipelines can split a batch into images.
            anchors=anchors.expand(batch_size, -1, -1),
            num_anchors_per_level=counts.expand(batch_size, -1),
            image_sizes=image_sizes,
            hidden_states=feature_maps if requests.output_hidden_states else None,
            attentions=attentions if requests.output_attentions else None,
        )
        return output if requests.return_dict else output.to_tuple()

    def detection_loss(self, logits, box_deltas, anchors, targets, valid) -> dict:
        """mmdet's `AnchorHead.loss` with PseudoSampler: focal loss over valid non-ignored anchors (one-hot targets,
        background all zeros), L1 on the encoded deltas of positive anchors, both divided by
        sum over images of max(positives, 1)."""
        config = self.config
        cls_sum = box_sum = logits.new_zeros(())
        normaliser = 0
        for image_logits, image_deltas, (classes, boxes), image_valid in zip(logits, box_deltas, targets, valid):
            assigned = assign_anchors(config, anchors, boxes, image_valid)
            positive = assigned > 0
            one_hot = torch.zeros_like(image_logits)
            matched = assigned[positive] - 1
            one_hot[positive, classes[matched]] = 1.0
            focal = sigmoid_focal_loss(image_logits, one_hot, config.focal_loss_alpha, config.focal_loss_gamma)
            cls_sum = cls_sum + focal[assigned >= 0].sum()
            box_targets = encode_boxes(anchors[positive], boxes[matched])
            box_sum = box_sum + (image_deltas[positive] - box_targets).abs().sum()
            normaliser += max(int(positive.sum()), 1)
        return {"loss_cls": cls_sum / normaliser, "loss_bbox": box_sum / normaliser}

    def _image_sizes(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None) -> torch.Tensor:
        batch_size, _, height, width = pixel_values.shape
        if pixel_mask is None:
            return torch.tensor([[height, width]], device=pixel_values.device).expand(batch_size, -1)
        if tuple(pixel_mask.shape) != (batch_size, height, width):
            raise ValueError(
                f"pixel_mask must have shape (batch, height, width) = {(batch_size, height, width)} like pixel_values, "
                f"got {tuple(pixel_mask.shape)}."
            )
        mask = pixel_mask.bool()
        return torch.stack([mask.any(dim=2).sum(dim=1), mask.any(dim=1).sum(dim=1)], dim=1)

    def _checked_labels(self, labels, image_sizes: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(class_labels, boxes) per image, boxes clipped to the image; a clear ValueError for anything unusable."""
        if not isinstance(labels, (list, tuple)) or len(labels) != len(image_sizes):
            length = f" of length {len(labels)}" if isinstance(labels, (list, tuple)) else ""
            raise ValueError(
                f"labels must be a list with one dict per image ({len(image_sizes)}), each with 'class_labels' and "
                f"'boxes'; got a {type(labels).__name__}{length}."
            )
        device, targets = image_sizes.device, []
        for index, (target, (height, width)) in enumerate(zip(labels, image_sizes.tolist())):
            if not hasattr(target, "keys") or "boxes" not in target or "class_labels" not in target:
                raise ValueError(f"labels[{index}] must be a dict with 'class_labels' and 'boxes'.")
            boxes = torch.as_tensor(target["boxes"], dtype=torch.float32, device=device).reshape(-1, 4)
            classes = torch.as_tensor(target["class_labels"], device=device).reshape(-1)
            if len(classes) != len(boxes) or classes.is_floating_point():
                raise ValueError(
                    f"labels[{index}]: 'class_labels' must hold one integer class per box; got {len(classes)} "
                    f"{classes.dtype} labels for {len(boxes)} boxes."
                )
            bad = (classes < 0) | (classes >= self.config.num_labels)
            if bad.any():
                raise ValueError(
                    f"labels[{index}]: class {int(classes[bad][0])} is outside 0..{self.config.num_labels - 1} "
                    f"(num_labels = {self.config.num_labels})."
                )
            finite = torch.isfinite(boxes).all(dim=1)
            ordered = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            inside = (
                (boxes[:, :2] >= -BOX_TOLERANCE).all(dim=1)
                & (boxes[:, 2] <= width + BOX_TOLERANCE)
                & (boxes[:, 3] <= height + BOX_TOLERANCE)
                & (boxes[:, 0] < width)
                & (boxes[:, 1] < height)
                & (boxes[:, 2:] > 0).all(dim=1)
            )
            problems = ~(finite & ordered & inside)
            if problems.any():
                box = [round(value, 2) for value in boxes[problems][0].tolist()]
                raise ValueError(
                    f"labels[{index}]: box {int(problems.nonzero()[0])} = {box} is not an (x0, y0, x1, y1) box with "
                    f"x1 > x0, y1 > y0 inside the {width}x{height} (width x height) input image. Boxes are absolute "
                    "pixel corners in the resized image the model sees, not normalised or (x, y, w, h)."
                )
            limits = boxes.new_tensor([width, height, width, height])
            boxes = torch.min(boxes.clamp(min=0), limits)
            targets.append((classes.long(), boxes))
        all_boxes = torch.cat([boxes for _, boxes in targets])
        if len(all_boxes) and all_boxes.max() <= 1.5 and int(image_sizes.min()) > 32:
            raise ValueError(
                "Every box of the batch lies within 1.5 pixels of the top-left corner: these look like normalised "
                "coordinates. Give absolute (x0, y0, x1, y1) pixels of the model input (multiply by its width/height)."
            )
        return targets


__all__ = [
    "MMDET_KEY_MAP",
    "PvtForObjectDetection",
    "PvtObjectDetectionOutput",
    "PvtRetinaFpn",
    "PvtRetinaHead",
    "anchor_strides",
    "assign_anchors",
    "base_anchors",
    "box_iou",
    "convert_mmdet_state_dict",
    "decode_boxes",
    "encode_boxes",
    "grid_anchors",
    "sigmoid_focal_loss",
    "valid_anchor_flags",
]
