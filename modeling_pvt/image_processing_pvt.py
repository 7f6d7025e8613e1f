"""Image processor for PVT: bicubic resize (optionally shortest edge + center crop), rescale, ImageNet normalize;
segmentation maps (nearest resize, never normalised) and semantic post-processing; the detection test transform
(keep-ratio resize, bottom/right padding with a `pixel_mask`) and RetinaNet post-processing with a torch NMS.

Built on transformers' PIL/NumPy backend, so it needs neither torchvision nor a GPU."""

import math

import numpy as np
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ChannelDimension,
    PILImageResampling,
    SizeDict,
    get_image_size,
)
from transformers.processing_utils import ImagesKwargs

try:
    from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput
except ImportError:  # transformers before 5.25

    class SemanticSegmentationPostProcessorOutput(BatchFeature):
        """`segmentation` (H, W) class indices and `segmentation_scores` (num_labels, H, W)."""


# The original evaluation transform resizes the shorter side to crop / 0.875 (256 for 224) before cropping.
EVAL_CROP_FRACTION = 0.875
# The paper's ADE20K test transform (mmseg `Resize(img_scale=(2048, 512), keep_ratio=True)` + PVT's `AlignResize`):
# short side 512 unless the long side would pass 2048, then each side rounded up to a multiple of 32.
SEGMENTATION_SHORT_SIDE, SEGMENTATION_LONG_SIDE, SEGMENTATION_SIZE_DIVISOR = 512, 2048, 32
# The paper's COCO test transform (mmdet `Resize(img_scale=(1333, 800), keep_ratio=True)`, `Pad(size_divisor=32)`) and
# RetinaNet's `test_cfg`: per level the 1000 best anchors, boxes above 0.05, class-wise NMS at IoU 0.5, 100 per image.
DETECTION_LONG_SIDE, DETECTION_SHORT_SIDE, DETECTION_SIZE_DIVISOR = 1333, 800, 32
DETECTION_TOP_K, DETECTION_THRESHOLD, DETECTION_NMS_THRESHOLD, DETECTION_MAX_PER_IMAGE = 1000, 0.05, 0.5, 100
# mmcv's `batched_nms` separates classes by offsetting boxes below this many candidates, else runs NMS per class.
NMS_SPLIT_THRESHOLD = 10000
# Boxes per block of the vectorised greedy NMS (see `_greedy_keep`).
NMS_BLOCK = 256
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def to_8_bit(image: Image.Image) -> Image.Image:
    """16/32-bit and float grayscale images scaled to 8 bit by their value range; PIL's own conversion to RGB
    clips them at 255 (a white image). Other images are returned as they are."""
    if image.mode not in _WIDE_MODES:
        return image
    values = np.asarray(image, dtype=np.float64)
    scale = 255.0 / 65535.0 if values.max() > 255 else 1.0
    return Image.fromarray((values * scale).clip(0, 255).astype(np.uint8), mode="L")


def aligned_resize_shape(height: int, width: int, short_side: int, long_side: int, divisor: int) -> tuple[int, int]:
    """mmcv's keep-ratio rescale (scale = min(short/short_edge, long/long_edge), rounded half up), then each side
    rounded up to a multiple of `divisor`, as PVT's segmentation test pipeline does."""
    scale = min(short_side / min(height, width), long_side / max(height, width))
    return tuple(math.ceil(int(side * scale + 0.5) / divisor) * divisor for side in (height, width))


def keep_ratio_resize_shape(height: int, width: int, short_side: int, long_side: int) -> tuple[int, int]:
    """mmcv's `rescale_size` for `img_scale=(long_side, short_side)`: scale = min(long / long_edge, short / short_edge),
    each side `int(side * scale + 0.5)` (the detection test transform)."""
    scale = min(long_side / max(height, width), short_side / min(height, width))
    return int(height * float(scale) + 0.5), int(width * float(scale) + 0.5)


class PvtV1ImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    do_reduce_labels (`bool`): subtract 1 from every label of the segmentation maps and turn 0 into 255 (ignored), for
        datasets whose 0 means "other" (ADE20K).
    size_divisor (`int`): with a `shortest_edge`/`longest_edge` size, round each resized side up to a multiple of it.
    pad_size_divisor (`int`): with `do_pad`, pad the batch bottom/right (after normalising, with 0) to its largest
        height and width rounded up to a multiple of it, and return a `pixel_mask` (1 = image). With a
        `shortest_edge`/`longest_edge` size and no `size_divisor`, the resize then keeps the ratio as mmcv rounds it.
    """

    do_reduce_labels: bool
    size_divisor: int
    pad_size_divisor: int


class PvtV1ImageProcessor(PilBackend):
    # Not "PvtImageProcessor": AutoImageProcessor resolves a saved `image_processor_type` by class name, and that
    # name is transformers' native PVT processor, which lacks our 16-bit handling and segmentation maps.
    valid_kwargs = PvtV1ImageProcessorKwargs
    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 224, "width": 224}
    crop_size = {"height": 224, "width": 224}
    default_to_square = True
    do_resize = True
    do_center_crop = False
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_reduce_labels = False
    size_divisor = None
    do_pad = False
    pad_size_divisor = None

    def convert_to_rgb(self, image, input_data_format=None):
        if isinstance(image, Image.Image):
            image = to_8_bit(image)
        return super().convert_to_rgb(image, input_data_format=input_data_format)

    @classmethod
    def for_evaluation(cls, crop: int = 224, **kwargs) -> "PvtV1ImageProcessor":
        """The original ImageNet eval transform: shortest edge to `crop / 0.875` (256 for 224), then center crop."""
        return cls(
            size={"shortest_edge": int(crop / EVAL_CROP_FRACTION)},
            do_center_crop=True,
            crop_size={"height": crop, "width": crop},
            **kwargs,
        )

    @classmethod
    def for_segmentation(cls, short_side: int = SEGMENTATION_SHORT_SIDE, **kwargs) -> "PvtV1ImageProcessor":
        """The paper's segmentation test transform: keep the aspect ratio with the short side at `short_side` (the
        long side at most 4x that), sides rounded up to a multiple of 32, bilinear, ImageNet mean/std."""
        return cls(
            size={"shortest_edge": short_side, "longest_edge": short_side * SEGMENTATION_LONG_SIDE // SEGMENTATION_SHORT_SIDE},
            size_divisor=SEGMENTATION_SIZE_DIVISOR,
            resample=PILImageResampling.BILINEAR,
            **kwargs,
        )

    @classmethod
    def for_detection(
        cls, long_side: int = DETECTION_LONG_SIDE, short_side: int = DETECTION_SHORT_SIDE, **kwargs
    ) -> "PvtV1ImageProcessor":
        """The paper's COCO test transform: keep the aspect ratio to fit `long_side` x `short_side` (1333 x 800,
        mmcv's rounding), bilinear, ImageNet mean/std, then pad bottom/right to a multiple of 32 with a `pixel_mask`
        that `PvtForObjectDetection` uses to clip boxes to the image."""
        return cls(
            size={"shortest_edge": short_side, "longest_edge": long_side},
            resample=PILImageResampling.BILINEAR,
            do_pad=True,
            pad_size_divisor=DETECTION_SIZE_DIVISOR,
            **kwargs,
        )

    def preprocess(self, images, segmentation_maps=None, **kwargs) -> BatchFeature:
        r"""
        segmentation_maps (`ImageInput`, *optional*): per-image class-index maps (H, W), returned as `labels`
            (int64, resized with nearest neighbour to the images' output size, never rescaled or normalised).
        """
        return super().preprocess(images, segmentation_maps, **kwargs)

    def resize(
        self,
        image: np.ndarray,
        size: SizeDict,
        resample=None,
        size_divisor: int | None = None,
        pad_size_divisor: int | None = None,
        **kwargs,
    ):
        if (size_divisor or pad_size_divisor) and size.shortest_edge and size.longest_edge:
            height, width = get_image_size(image, channel_dim=ChannelDimension.FIRST)
            if size_divisor:
                target = aligned_resize_shape(height, width, size.shortest_edge, size.longest_edge, size_divisor)
            else:
                target = keep_ratio_resize_shape(height, width, size.shortest_edge, size.longest_edge)
            size = SizeDict(height=target[0], width=target[1])
        return super().resize(image, size, resample, **kwargs)

    def _preprocess_image_like_inputs(
        self, images, segmentation_maps, do_convert_rgb, input_data_format, return_tensors, **kwargs
    ) -> BatchFeature:
        do_reduce_labels = kwargs.pop("do_reduce_labels")
        do_pad, pad_size_divisor = kwargs.pop("do_pad", False), kwargs.pop("pad_size_divisor", None)
        images = self._prepare_image_like_inputs(
            images=images, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format
        )
        data = {"pixel_values": self._preprocess(images, pad_size_divisor=pad_size_divisor, **kwargs)}
        pad_size = None
        if do_pad:
            heights, widths = zip(*(image.shape[-2:] for image in data["pixel_values"]))
            divisor = pad_size_divisor or 1
            pad_size = SizeDict(
                height=math.ceil(max(heights) / divisor) * divisor, width=math.ceil(max(widths) / divisor) * divisor
            )
            data["pixel_values"], data["pixel_mask"] = self.pad(data["pixel_values"], pad_size, return_mask=True)
        if segmentation_maps is not None:
            maps = self._prepare_image_like_inputs(
                images=segmentation_maps,
                expected_ndims=2,
                do_convert_rgb=False,
                input_data_format=ChannelDimension.FIRST,
            )
            if len(maps) != len(images):
                raise ValueError(f"Got {len(images)} images but {len(maps)} segmentation maps; give one per image.")
            if do_reduce_labels:
                maps = [reduce_labels(label_map) for label_map in maps]
            map_kwargs = {**kwargs, "do_rescale": False, "do_normalize": False, "resample": PILImageResampling.NEAREST}
            maps = self._preprocess(maps, pad_size_divisor=pad_size_divisor, **map_kwargs)
            if pad_size is not None:  # padding is unlabelled
                maps = self.pad(maps, pad_size, fill_value=255)
            data["labels"] = [label_map.squeeze(0).astype(np.int64) for label_map in maps]
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _preprocess(
        self,
        images: list[np.ndarray],
        do_resize: bool,
        size: SizeDict,
        resample,
        do_center_crop: bool,
        crop_size: SizeDict,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean,
        image_std,
        size_divisor: int | None = None,
        pad_size_divisor: int | None = None,
        **kwargs,
    ) -> list[np.ndarray]:
        processed = []
        for image in images:
            if do_resize:
                image = self.resize(
                    image, size, resample, size_divisor=size_divisor, pad_size_divisor=pad_size_divisor
                )
            if do_center_crop:
                image = self.center_crop(image, crop_size)
            if do_rescale:
                image = self.rescale(image, rescale_factor)
            if do_normalize:
                image = self.normalize(image, image_mean, image_std)
            processed.append(image)
        return processed

    def post_process_semantic_segmentation(
        self, outputs, target_sizes: list[tuple[int, int]] | None = None, return_segmentation_scores: bool = False
    ) -> list:
        """Class-index maps (H, W) from a segmentation model's `logits`: bilinearly resized to `target_sizes`
        (one (height, width) per image, e.g. the original images' sizes) before the argmax, else at logits size.
        With `return_segmentation_scores=True`, one `SemanticSegmentationPostProcessorOutput` per image instead:
        `segmentation` (the map) and `segmentation_scores` (num_labels, H, W), the logits at that size (transformers'
        signature since 5.25)."""
        import torch
        import torch.nn.functional as F

        logits = outputs.logits
        if target_sizes is None:
            scores = list(logits)
        else:
            if len(target_sizes) != len(logits):
                raise ValueError(
                    f"Got {len(target_sizes)} target sizes for a batch of {len(logits)}; give one per image."
                )
            sizes = torch.as_tensor(target_sizes).tolist()
            scores = [
                F.interpolate(image_logits[None], size=(int(h), int(w)), mode="bilinear", align_corners=False)[0]
                for image_logits, (h, w) in zip(logits, sizes)
            ]
        maps = [image_scores.argmax(dim=0) for image_scores in scores]
        if not return_segmentation_scores:
            return maps
        return [
            SemanticSegmentationPostProcessorOutput(data={"segmentation": segmentation, "segmentation_scores": score})
            for segmentation, score in zip(maps, scores)
        ]

    def post_process_object_detection(
        self,
        outputs,
        threshold: float = DETECTION_THRESHOLD,
        target_sizes=None,
        top_k: int = DETECTION_TOP_K,
        nms_threshold: float = DETECTION_NMS_THRESHOLD,
        max_detections: int = DETECTION_MAX_PER_IMAGE,
    ) -> list[dict]:
        """Scored, labelled boxes from `PvtForObjectDetection` outputs, as mmdet's RetinaNet test pipeline: per level
        the `top_k` anchors by best class probability (sigmoid), their boxes (already decoded and clipped to the unpadded
        input) rescaled to `target_sizes` (one (height, width) per image, the original sizes; else left in input
        pixels), every (box, class) with probability > `threshold`, class-wise NMS (IoU > `nms_threshold` suppresses)
        and the `max_detections` best. Returns per image a dict of `scores` (K,), `labels` (K,) and `boxes` (K, 4)
        as absolute (x0, y0, x1, y1), best first, like transformers' DETR processors."""
        import torch

        logits, boxes = outputs.logits, outputs.pred_boxes
        counts, image_sizes = outputs.num_anchors_per_level, outputs.image_sizes
        if target_sizes is not None and len(target_sizes) != len(logits):
            raise ValueError(f"Got {len(target_sizes)} target sizes for a batch of {len(logits)}; give one per image.")
        target_sizes = None if target_sizes is None else torch.as_tensor(target_sizes).tolist()
        results = []
        for index in range(len(logits)):
            candidate_scores, candidate_boxes, start = [], [], 0
            for count in counts[index].tolist():
                scores = logits[index, start : start + count].float().sigmoid()
                level_boxes = boxes[index, start : start + count].float()
                start += count
                if 0 < top_k < count:
                    best = scores.max(dim=1).values.topk(top_k).indices
                    scores, level_boxes = scores[best], level_boxes[best]
                candidate_scores.append(scores)
                candidate_boxes.append(level_boxes)
            scores, image_boxes = torch.cat(candidate_scores), torch.cat(candidate_boxes)
            if target_sizes is not None:
                (input_height, input_width), (height, width) = image_sizes[index].tolist(), target_sizes[index]
                # mmdet's `scale_factor`: resized / original per axis, in float64 then float32.
                scale = torch.tensor([input_width / width, input_height / height] * 2, dtype=torch.float32)
                image_boxes = image_boxes / scale.to(image_boxes.device)
            num_classes = scores.shape[1]
            candidates = (scores.reshape(-1) > threshold).nonzero().squeeze(1)
            labels = candidates % num_classes
            image_boxes, scores = image_boxes[candidates // num_classes], scores.reshape(-1)[candidates]
            keep = batched_nms(image_boxes, scores, labels, nms_threshold)[:max_detections]
            results.append({"scores": scores[keep], "labels": labels[keep], "boxes": image_boxes[keep]})
        return results


def reduce_labels(label_map: np.ndarray) -> np.ndarray:
    """ADE20K-style label reduction: 0 ("other") becomes 255 (ignored) and every other class moves down by one."""
    label_map = label_map.astype(np.int64)
    return np.where((label_map == 0) | (label_map == 255), 255, label_map - 1)


def _pairwise_iou(boxes, others):
    """(M, N) IoU as mmcv's NMS computes it (offset 0, float32): inter / (area_i + area_j - inter)."""
    import torch

    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    other_areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    widths = (torch.min(boxes[:, None, 2], others[None, :, 2]) - torch.max(boxes[:, None, 0], others[None, :, 0]))
    heights = (torch.min(boxes[:, None, 3], others[None, :, 3]) - torch.max(boxes[:, None, 1], others[None, :, 1]))
    overlap = widths.clamp(min=0) * heights.clamp(min=0)
    return overlap / (areas[:, None] + other_areas[None, :] - overlap)


def _greedy_keep(boxes, iou_threshold: float, block: int = NMS_BLOCK):
    """Greedy NMS of boxes sorted best first, as a (N,) keep mask: a kept box suppresses every later box whose IoU
    with it is strictly above the threshold (mmcv's rule).

    Vectorised by blocks of `block` boxes, in order: the kept boxes of earlier blocks strike out a block's boxes in one
    IoU matrix; inside the block, keep[j] = "no kept i < j suppresses j" is iterated from "keep all". After t rounds
    the first t entries are final (each depends only on earlier ones) and the only fixed point is the greedy answer,
    so the rounds stop at exactly greedy NMS after at most `block` (in practice a few) small passes."""
    import torch

    keep = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    for start in range(0, len(boxes), block):
        stop = min(start + block, len(boxes))
        candidates = boxes[start:stop]
        kept_before = boxes[:start][keep[:start]]
        alive = ~(_pairwise_iou(kept_before, candidates) > iou_threshold).any(dim=0)
        # Within the block only an earlier (higher-scored) box that is still alive may suppress.
        local = (_pairwise_iou(candidates, candidates) > iou_threshold).triu(diagonal=1) & alive[:, None]
        block_keep = alive
        while True:
            updated = alive & ~(local & block_keep[:, None]).any(dim=0)
            if torch.equal(updated, block_keep):
                break
            block_keep = updated
        keep[start:stop] = block_keep
    return keep


def batched_nms(boxes, scores, labels, iou_threshold: float, split_threshold: int = NMS_SPLIT_THRESHOLD):
    """Class-wise NMS as mmcv's `batched_nms`: indices of the kept boxes, best score first (ties by index). Below
    `split_threshold` boxes, mmcv shifts each class's boxes by label x (max coordinate + 1) so that classes never
    overlap and runs one NMS; the IoUs are then computed on the shifted coordinates, which this does too so that
    float rounding matches. Above it, NMS runs per class on the boxes as they are."""
    import torch

    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    if len(boxes) < split_threshold:
        boxes = boxes + (labels.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes)))[:, None]
    order = scores.argsort(descending=True, stable=True)
    keep = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    for label in labels.unique():  # a loop over classes; boxes within a class are handled at once
        members = order[labels[order] == label]
        keep[members] = _greedy_keep(boxes[members], iou_threshold)
    return order[keep[order]]


def non_max_suppression(boxes, scores, iou_threshold: float):
    """Class-agnostic greedy NMS (mmcv's `nms`): indices of the kept boxes, best score first (ties by index)."""
    order = scores.argsort(descending=True, stable=True)
    if len(order) == 0:
        return order
    return order[_greedy_keep(boxes[order], iou_threshold)]


# The name users and saved code know; the class itself is registered under its own name.
PvtImageProcessor = PvtV1ImageProcessor

__all__ = [
    "PvtImageProcessor",
    "PvtV1ImageProcessor",
    "PvtV1ImageProcessorKwargs",
    "to_8_bit",
    "reduce_labels",
    "aligned_resize_shape",
    "keep_ratio_resize_shape",
    "batched_nms",
    "non_max_suppression",
]
