"""An independent RetinaNet on the original dense PVT, written from the descriptions only (issue 19: the original
`detection/configs/retinanet_pvt_*_fpn_1x_coco.py` on MMDetection 2.13 — `FPN`, `RetinaHead`, `AnchorGenerator`,
`DeltaXYWHBBoxCoder`, `MaxIoUAssigner`, `FocalLoss`, `L1Loss`, `multiclass_nms` and mmcv's `batched_nms`/`nms`), kept
close to mmdet's own structure (per-level lists, loops over images, boxes and classes) and with mmdet's parameter
names, so that its `state_dict()` is an mmdet checkpoint. Used only to check our model; never imports it."""

import numpy as np
import torch
import torch.nn.functional as F
from reference_semantic_fpn import DensePyramidVisionTransformer
from torch import nn

TEST_CFG = dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, iou_threshold=0.5, max_per_img=100)


class ConvModule(nn.Module):
    """mmcv's ConvModule without a norm: conv with bias, then ReLU unless `act=False`."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, act=True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=True)
        self.act = act

    def forward(self, x):
        x = self.conv(x)
        return F.relu(x) if self.act else x


class FPN(nn.Module):
    """mmdet.models.necks.FPN with act_cfg=None, start_level, add_extra_convs='on_input', num_outs."""

    def __init__(self, in_channels, out_channels, num_outs=5, start_level=1):
        super().__init__()
        self.in_channels = in_channels
        self.num_outs = num_outs
        self.start_level = start_level
        self.backbone_end_level = len(in_channels)
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for i in range(self.start_level, self.backbone_end_level):
            self.lateral_convs.append(ConvModule(in_channels[i], out_channels, 1, act=False))
            self.fpn_convs.append(ConvModule(out_channels, out_channels, 3, padding=1, act=False))
        extra_levels = num_outs - self.backbone_end_level + self.start_level
        for i in range(extra_levels):
            channels = self.in_channels[self.backbone_end_level - 1] if i == 0 else out_channels
            self.fpn_convs.append(ConvModule(channels, out_channels, 3, stride=2, padding=1, act=False))

    def forward(self, inputs):
        laterals = [conv(inputs[i + self.start_level]) for i, conv in enumerate(self.lateral_convs)]
        used_backbone_levels = len(laterals)
        for i in range(used_backbone_levels - 1, 0, -1):
            prev_shape = laterals[i - 1].shape[2:]
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=prev_shape, mode="nearest")
        outs = [self.fpn_convs[i](laterals[i]) for i in range(used_backbone_levels)]
        extra_source = inputs[self.backbone_end_level - 1]
        outs.append(self.fpn_convs[used_backbone_levels](extra_source))
        for i in range(used_backbone_levels + 1, self.num_outs):
            outs.append(self.fpn_convs[i](outs[-1]))
        return tuple(outs)


class AnchorGenerator:
    """mmdet.core.anchor.AnchorGenerator (scale_major=True, center_offset=0, octave scales)."""

    def __init__(self, strides, ratios, octave_base_scale, scales_per_octave):
        self.strides = [(s, s) for s in strides]
        self.base_sizes = [min(stride) for stride in self.strides]
        octave_scales = np.array([2 ** (i / scales_per_octave) for i in range(scales_per_octave)])
        self.scales = torch.Tensor(octave_scales * octave_base_scale)
        self.ratios = torch.Tensor(ratios)
        self.base_anchors = [
            self.gen_single_level_base_anchors(size, self.scales, self.ratios) for size in self.base_sizes
        ]

    @property
    def num_base_anchors(self):
        return [base_anchors.size(0) for base_anchors in self.base_anchors]

    def gen_single_level_base_anchors(self, base_size, scales, ratios):
        w = h = base_size
        x_center, y_center = 0.0 * w, 0.0 * h
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1 / h_ratios
        ws = (w * w_ratios[:, None] * scales[None, :]).view(-1)
        hs = (h * h_ratios[:, None] * scales[None, :]).view(-1)
        base_anchors = [x_center - 0.5 * ws, y_center - 0.5 * hs, x_center + 0.5 * ws, y_center + 0.5 * hs]
        return torch.stack(base_anchors, dim=-1)

    @staticmethod
    def _meshgrid(x, y):
        xx = x.repeat(y.shape[0])
        yy = y.view(-1, 1).repeat(1, x.shape[0]).view(-1)
        return xx, yy

    def grid_anchors(self, featmap_sizes):
        anchors = []
        for base_anchors, (feat_h, feat_w), stride in zip(self.base_anchors, featmap_sizes, self.strides):
            shift_x = torch.arange(0, int(feat_w)) * stride[0]
            shift_y = torch.arange(0, int(feat_h)) * stride[1]
            shift_xx, shift_yy = self._meshgrid(shift_x, shift_y)
            shifts = torch.stack([shift_xx, shift_yy, shift_xx, shift_yy], dim=-1).type_as(base_anchors)
            anchors.append((base_anchors[None, :, :] + shifts[:, None, :]).view(-1, 4))
        return anchors

    def valid_flags(self, featmap_sizes, pad_shape):
        flags = []
        for (feat_h, feat_w), stride, num in zip(featmap_sizes, self.strides, self.num_base_anchors):
            h, w = pad_shape[:2]
            valid_h = min(int(np.ceil(h / stride[1])), feat_h)
            valid_w = min(int(np.ceil(w / stride[0])), feat_w)
            valid_x = torch.zeros(feat_w, dtype=torch.bool)
            valid_y = torch.zeros(feat_h, dtype=torch.bool)
            valid_x[:valid_w] = 1
            valid_y[:valid_h] = 1
            valid_xx, valid_yy = self._meshgrid(valid_x, valid_y)
            valid = valid_xx & valid_yy
            flags.append(valid[:, None].expand(valid.size(0), num).contiguous().view(-1))
        return flags


def bbox2delta(proposals, gt):
    px = (proposals[..., 0] + proposals[..., 2]) * 0.5
    py = (proposals[..., 1] + proposals[..., 3]) * 0.5
    pw = proposals[..., 2] - proposals[..., 0]
    ph = proposals[..., 3] - proposals[..., 1]
    gx = (gt[..., 0] + gt[..., 2]) * 0.5
    gy = (gt[..., 1] + gt[..., 3]) * 0.5
    gw = gt[..., 2] - gt[..., 0]
    gh = gt[..., 3] - gt[..., 1]
    return torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=-1)


def delta2bbox(rois, deltas, max_shape=None, wh_ratio_clip=16 / 1000):
    """mmdet 2.13 delta2bbox for (N, 4) rois and deltas, means 0 and stds 1; `max_shape` = (h, w)."""
    dx, dy, dw, dh = deltas[:, 0::4], deltas[:, 1::4], deltas[:, 2::4], deltas[:, 3::4]
    x1, y1, x2, y2 = rois[:, 0], rois[:, 1], rois[:, 2], rois[:, 3]
    px = ((x1 + x2) * 0.5).unsqueeze(-1).expand_as(dx)
    py = ((y1 + y2) * 0.5).unsqueeze(-1).expand_as(dy)
    pw = (x2 - x1).unsqueeze(-1).expand_as(dw)
    ph = (y2 - y1).unsqueeze(-1).expand_as(dh)
    dx_width = pw * dx
    dy_height = ph * dy
    max_ratio = np.abs(np.log(wh_ratio_clip))
    dw = dw.clamp(min=-max_ratio, max=max_ratio)
    dh = dh.clamp(min=-max_ratio, max=max_ratio)
    gw = pw * dw.exp()
    gh = ph * dh.exp()
    gx = px + dx_width
    gy = py + dy_height
    x1 = gx - gw * 0.5
    y1 = gy - gh * 0.5
    x2 = gx + gw * 0.5
    y2 = gy + gh * 0.5
    bboxes = torch.stack([x1, y1, x2, y2], dim=-1).view(deltas.size())
    if max_shape is not None:
        max_shape = x1.new_tensor(max_shape)
        min_xy = x1.new_tensor(0)
        max_xy = torch.cat([max_shape] * 2, dim=-1).flip(-1).unsqueeze(-2)
        bboxes = torch.where(bboxes < min_xy, min_xy, bboxes)
        bboxes = torch.where(bboxes > max_xy, max_xy, bboxes)
    return bboxes


def bbox_overlaps(bboxes1, bboxes2, eps=1e-6):
    area1 = (bboxes1[..., 2] - bboxes1[..., 0]) * (bboxes1[..., 3] - bboxes1[..., 1])
    area2 = (bboxes2[..., 2] - bboxes2[..., 0]) * (bboxes2[..., 3] - bboxes2[..., 1])
    lt = torch.max(bboxes1[..., :, None, :2], bboxes2[..., None, :, :2])
    rb = torch.min(bboxes1[..., :, None, 2:], bboxes2[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = area1[..., None] + area2[..., None, :] - overlap
    union = torch.max(union, union.new_tensor([eps]))
    return overlap / union


def max_iou_assign(bboxes, gt_bboxes, pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0):
    """MaxIoUAssigner.assign_wrt_overlaps (gt_max_assign_all=True, match_low_quality=True): -1 / 0 / gt index + 1."""
    num_gts, num_bboxes = gt_bboxes.size(0), bboxes.size(0)
    assigned_gt_inds = torch.full((num_bboxes,), -1, dtype=torch.long)
    if num_gts == 0:
        assigned_gt_inds[:] = 0
        return assigned_gt_inds
    overlaps = bbox_overlaps(gt_bboxes, bboxes)
    max_overlaps, argmax_overlaps = overlaps.max(dim=0)
    gt_max_overlaps, _ = overlaps.max(dim=1)
    assigned_gt_inds[(max_overlaps >= 0) & (max_overlaps < neg_iou_thr)] = 0
    pos_inds = max_overlaps >= pos_iou_thr
    assigned_gt_inds[pos_inds] = argmax_overlaps[pos_inds] + 1
    for i in range(num_gts):
        if gt_max_overlaps[i] >= min_pos_iou:
            max_iou_inds = overlaps[i, :] == gt_max_overlaps[i]
            assigned_gt_inds[max_iou_inds] = i + 1
    return assigned_gt_inds


def py_sigmoid_focal_loss(pred, target, gamma=2.0, alpha=0.25):
    pred_sigmoid = pred.sigmoid()
    target = target.type_as(pred)
    pt = (1 - pred_sigmoid) * target + pred_sigmoid * (1 - target)
    focal_weight = (alpha * target + (1 - alpha) * (1 - target)) * pt.pow(gamma)
    return F.binary_cross_entropy_with_logits(pred, target, reduction="none") * focal_weight


def nms(boxes, scores, iou_threshold):
    """mmcv's nms_cpu: visit boxes by descending score; each kept box drops every later box with IoU > threshold."""
    order = scores.sort(dim=0, descending=True, stable=True)[1]
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    select = torch.ones(len(order), dtype=torch.bool)
    for _i in range(len(order)):
        if not select[_i]:
            continue
        i, later = order[_i], order[_i + 1 :]
        w = (torch.min(x2[i], x2[later]) - torch.max(x1[i], x1[later])).clamp(min=0)
        h = (torch.min(y2[i], y2[later]) - torch.max(y1[i], y1[later])).clamp(min=0)
        inter = w * h
        ovr = inter / (areas[i] + areas[later] - inter)
        select[_i + 1 :] &= ~(ovr > iou_threshold)
    return order[select]


def batched_nms(boxes, scores, idxs, iou_threshold, split_thr=10000):
    if boxes.shape[0] < split_thr:
        max_coordinate = boxes.max()
        offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
        keep = nms(boxes + offsets[:, None], scores, iou_threshold)
        return keep
    total_mask = scores.new_zeros(scores.size(), dtype=torch.bool)
    for class_id in torch.unique(idxs):
        mask = (idxs == class_id).nonzero(as_tuple=False).view(-1)
        total_mask[mask[nms(boxes[mask], scores[mask], iou_threshold)]] = True
    keep = total_mask.nonzero(as_tuple=False).view(-1)
    _, inds = scores[keep].sort(descending=True, stable=True)
    return keep[inds]


def multiclass_nms(multi_bboxes, multi_scores, score_thr, iou_threshold, max_num):
    """mmdet multiclass_nms; `multi_scores` has the background column last. Returns (boxes, scores, labels)."""
    num_classes = multi_scores.size(1) - 1
    bboxes = multi_bboxes[:, None].expand(multi_scores.size(0), num_classes, 4)
    scores = multi_scores[:, :-1]
    labels = torch.arange(num_classes, dtype=torch.long).view(1, -1).expand_as(scores)
    bboxes, scores, labels = bboxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
    inds = (scores > score_thr).nonzero(as_tuple=False).squeeze(1)
    bboxes, scores, labels = bboxes[inds], scores[inds], labels[inds]
    if bboxes.numel() == 0:
        return bboxes, scores, labels
    keep = batched_nms(bboxes, scores, labels, iou_threshold)[:max_num]
    return bboxes[keep], scores[keep], labels[keep]


class RetinaHead(nn.Module):
    def __init__(self, num_classes, in_channels=256, feat_channels=256, stacked_convs=4, strides=(8, 16, 32, 64, 128)):
        super().__init__()
        self.num_classes = num_classes
        self.anchor_generator = AnchorGenerator(strides, [0.5, 1.0, 2.0], octave_base_scale=4, scales_per_octave=3)
        self.num_anchors = self.anchor_generator.num_base_anchors[0]
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for i in range(stacked_convs):
            chn = in_channels if i == 0 else feat_channels
            self.cls_convs.append(ConvModule(chn, feat_channels, 3, padding=1))
            self.reg_convs.append(ConvModule(chn, feat_channels, 3, padding=1))
        self.retina_cls = nn.Conv2d(feat_channels, self.num_anchors * num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(feat_channels, self.num_anchors * 4, 3, padding=1)

    def forward_single(self, x):
        cls_feat = reg_feat = x
        for cls_conv in self.cls_convs:
            cls_feat = cls_conv(cls_feat)
        for reg_conv in self.reg_convs:
            reg_feat = reg_conv(reg_feat)
        return self.retina_cls(cls_feat), self.retina_reg(reg_feat)

    def forward(self, feats):
        outputs = [self.forward_single(feat) for feat in feats]
        return [cls for cls, _ in outputs], [reg for _, reg in outputs]

    def get_bboxes_single(self, cls_scores, bbox_preds, img_shape, scale_factor=None, cfg=TEST_CFG):
        """AnchorHead._get_bboxes for one image (index 0 of the per-level maps); `scale_factor` = [w, h, w, h]."""
        featmap_sizes = [cls_score.shape[-2:] for cls_score in cls_scores]
        mlvl_anchors = self.anchor_generator.grid_anchors(featmap_sizes)
        mlvl_bboxes, mlvl_scores = [], []
        for cls_score, bbox_pred, anchors in zip(cls_scores, bbox_preds, mlvl_anchors):
            scores = cls_score[0].permute(1, 2, 0).reshape(-1, self.num_classes).float().sigmoid()
            bbox_pred = bbox_pred[0].permute(1, 2, 0).reshape(-1, 4).float()
            nms_pre = cfg["nms_pre"]
            if 0 < nms_pre < scores.shape[0]:
                max_scores, _ = scores.max(dim=1)
                _, topk_inds = max_scores.topk(nms_pre)
                anchors, bbox_pred, scores = anchors[topk_inds], bbox_pred[topk_inds], scores[topk_inds]
            mlvl_bboxes.append(delta2bbox(anchors, bbox_pred, max_shape=img_shape))
            mlvl_scores.append(scores)
        mlvl_bboxes = torch.cat(mlvl_bboxes)
        if scale_factor is not None:
            mlvl_bboxes = mlvl_bboxes / mlvl_bboxes.new_tensor(np.array(scale_factor, dtype=np.float32))
        mlvl_scores = torch.cat(mlvl_scores)
        mlvl_scores = torch.cat([mlvl_scores, mlvl_scores.new_zeros(mlvl_scores.shape[0], 1)], dim=1)
        return multiclass_nms(mlvl_bboxes, mlvl_scores, cfg["score_thr"], cfg["iou_threshold"], cfg["max_per_img"])

    def loss(self, cls_scores, bbox_preds, gt_bboxes, gt_labels, pad_shapes):
        """AnchorHead.loss with the RetinaNet train_cfg (PseudoSampler, allowed_border=-1, pos_weight=-1): returns
        the summed focal and L1 losses, each divided by sum over images of max(num_pos, 1)."""
        featmap_sizes = [cls_score.shape[-2:] for cls_score in cls_scores]
        anchors = torch.cat(self.anchor_generator.grid_anchors(featmap_sizes))
        num_imgs = cls_scores[0].shape[0]
        all_cls = torch.cat([c.permute(0, 2, 3, 1).reshape(num_imgs, -1, self.num_classes) for c in cls_scores], 1)
        all_reg = torch.cat([r.permute(0, 2, 3, 1).reshape(num_imgs, -1, 4) for r in bbox_preds], 1)
        loss_cls, loss_bbox, num_total_pos = 0.0, 0.0, 0
        for img in range(num_imgs):
            inside = torch.cat(self.anchor_generator.valid_flags(featmap_sizes, pad_shapes[img]))
            assigned = max_iou_assign(anchors[inside], gt_bboxes[img])
            labels = torch.full((len(anchors),), self.num_classes, dtype=torch.long)
            label_weights = torch.zeros(len(anchors))
            bbox_targets = torch.zeros_like(anchors)
            bbox_weights = torch.zeros_like(anchors)
            inside_inds = inside.nonzero().squeeze(1)
            pos_inds = inside_inds[assigned > 0]
            neg_inds = inside_inds[assigned == 0]
            if len(pos_inds):
                pos_gt = assigned[assigned > 0] - 1
                bbox_targets[pos_inds] = bbox2delta(anchors[pos_inds], gt_bboxes[img][pos_gt])
                bbox_weights[pos_inds] = 1.0
                labels[pos_inds] = gt_labels[img][pos_gt]
                label_weights[pos_inds] = 1.0
            label_weights[neg_inds] = 1.0
            target = F.one_hot(labels, num_classes=self.num_classes + 1)[:, : self.num_classes]
            loss_cls = loss_cls + (py_sigmoid_focal_loss(all_cls[img], target) * label_weights[:, None]).sum()
            loss_bbox = loss_bbox + (torch.abs(all_reg[img] - bbox_targets) * bbox_weights).sum()
            num_total_pos += max(len(pos_inds), 1)
        return loss_cls / num_total_pos, loss_bbox / num_total_pos


class RetinaNet(nn.Module):
    """mmdet's single-stage detector: `backbone`, `neck`, `bbox_head`."""

    def __init__(self, num_classes, fpn_channels=256, head_channels=256, stacked_convs=4, **backbone_kwargs):
        super().__init__()
        self.backbone = DensePyramidVisionTransformer(**backbone_kwargs)
        in_channels = list(backbone_kwargs.get("embed_dims", (64, 128, 320, 512)))
        self.neck = FPN(in_channels, fpn_channels, num_outs=5, start_level=1)
        self.bbox_head = RetinaHead(num_classes, fpn_channels, head_channels, stacked_convs)

    def forward(self, x):
        return self.bbox_head(self.neck(self.backbone(x)))


def mmdet_scale_factor(img_shape, ori_shape):
    """mmdet Resize's scale_factor [w_scale, h_scale, w_scale, h_scale] (new / original)."""
    w_scale, h_scale = img_shape[1] / ori_shape[1], img_shape[0] / ori_shape[0]
    return [w_scale, h_scale, w_scale, h_scale]


def randomise_head(model: RetinaNet, generator: torch.Generator | None = None) -> RetinaNet:
    """Non-trivial weights everywhere (the paper's init gives every anchor probability 0.01, below the test threshold
    0.05, and no detections to compare): weights N(0, 1 / fan-in) so that activations stay of order 1 at any width,
    random biases, and class biases around probability 0.3."""
    with torch.no_grad():
        for module in [*model.neck.modules(), *model.bbox_head.modules()]:
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0, fan_in**-0.5, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
        model.bbox_head.retina_cls.bias.normal_(-1.0, 1.0, generator=generator)
    return model
