"""Configuration of the Pyramid Vision Transformer (PVT v1, Wang et al., 2021)."""

import math

from transformers import PretrainedConfig
from transformers.backbone_utils import BackboneConfigMixin

# The paper's variants differ only in depth; everything else is shared (Table 1 of the paper).
_PAPER_DIMENSIONS = {
    "hidden_sizes": [64, 128, 320, 512],
    "num_attention_heads": [1, 2, 5, 8],
    "mlp_ratios": [8, 8, 4, 4],
    "sr_ratios": [8, 4, 2, 1],
    "patch_sizes": [4, 2, 2, 2],
}
PRESETS = {
    "pvt-tiny": {**_PAPER_DIMENSIONS, "depths": [2, 2, 2, 2]},
    "pvt-small": {**_PAPER_DIMENSIONS, "depths": [3, 4, 6, 3]},
    "pvt-medium": {**_PAPER_DIMENSIONS, "depths": [3, 4, 18, 3]},
    "pvt-large": {**_PAPER_DIMENSIONS, "depths": [3, 8, 27, 3]},
}
_PER_STAGE_FIELDS = ("hidden_sizes", "num_attention_heads", "mlp_ratios", "sr_ratios", "patch_sizes")


def preset_name(name: str) -> str | None:
    """The preset key for `name` ("small" or "pvt-small" -> "pvt-small"), or None when it names no preset."""
    key = name if name.startswith("pvt-") else f"pvt-{name}"
    return key if key in PRESETS else None


class PvtConfig(BackboneConfigMixin, PretrainedConfig):
    r"""
    Configuration of a PVT v1 model. Defaults give PVT-Tiny.

    Args:
        num_channels (`int`, defaults to 3): channels of the input images.
        image_size (`int` or `[height, width]`, defaults to 224): the input size the position embeddings were
            trained at. Other sizes work: the stored grids are resized bilinearly to the actual feature-map size.
        hidden_sizes, depths, num_attention_heads, mlp_ratios, sr_ratios, patch_sizes (`list`, one entry per stage):
            width, number of blocks, attention heads, MLP expansion, spatial-reduction ratio of keys/values and patch
            size (kernel = stride) of each stage's embedding convolution.
        qkv_bias (`bool`, defaults to `True`): bias on the query and key/value projections.
        hidden_act (`str`, defaults to `"gelu"`): MLP activation.
        hidden_dropout_prob, attention_probs_dropout_prob (`float`): dropout after embeddings, projections and MLP;
            dropout on attention probabilities.
        drop_path_rate (`float`): stochastic depth rate of the last block, rising linearly from 0 at the first.
        layer_norm_eps (`float`, defaults to 1e-6): eps of the LayerNorms in the blocks and the final norm.
        conv_layer_norm_eps (`float`, defaults to 1e-5): eps of the LayerNorms after a strided convolution (patch
            embedding and spatial reduction); the original checkpoints use PyTorch's default there.
        initializer_range (`float`): std of the truncated normal used for Linear weights and embeddings.
        out_features / out_indices (`list`, optional): stages (`"stage1"`..`"stage4"`) returned by `PvtBackbone`.
        last_stage_cls_token (`bool`, optional): whether the last stage prepends a CLS token to its tokens. `None`
            (default) lets the model class decide as the original code does: the classifier and `PvtModel` use it
            (ImageNet PVT), the dense models `PvtBackbone` and `PvtForSemanticSegmentation` do not (the original
            segmentation/detection backbones add only `pos_embed4[:, 1:]` and attend over the spatial tokens).
            Classifier checkpoints load either way: the stored CLS slot of the position embeddings is kept.
        fpn_hidden_size (`int`, defaults to 256): channels of the FPN neck (lateral and output convolutions), for
            segmentation (Semantic FPN) and detection (RetinaNet's FPN, P3-P7) alike.
        decoder_hidden_size (`int`, defaults to 128): channels of the Semantic FPN head's per-level branches.
        classifier_dropout_prob (`float`, defaults to 0.1): `Dropout2d` before the segmentation classifier.
        semantic_loss_ignore_index (`int`, defaults to 255): label value excluded from the segmentation loss
            and metrics (ADE20K with reduced labels marks "other" with 255).
        detection_head_hidden_size (`int`, defaults to 256): channels of the RetinaNet head's convolutions
            (mmdet's `feat_channels`).
        detection_head_num_convs (`int`, defaults to 4): 3x3 conv + ReLU layers in each of the head's classification
            and box branches (mmdet's `stacked_convs`).
        anchor_octave_base_scale (`float`, defaults to 4), anchor_scales_per_octave (`int`, defaults to 3): anchor
            sizes per level are stride x base scale x 2^(i / scales_per_octave), i = 0..scales_per_octave - 1.
        anchor_ratios (`list[float]`, defaults to `[0.5, 1.0, 2.0]`): anchor height/width ratios. Each level has
            len(anchor_ratios) x anchor_scales_per_octave anchors per position (9).
        detection_prior_prob (`float`, defaults to 0.01): initial foreground probability of every anchor (the
            classifier's bias is -log((1 - p) / p)).
        focal_loss_alpha (`float`, defaults to 0.25), focal_loss_gamma (`float`, defaults to 2.0): the sigmoid focal
            loss of the classification branch.
        detection_pos_iou_threshold (`float`, defaults to 0.5), detection_neg_iou_threshold (`float`, defaults to
            0.4), detection_min_pos_iou (`float`, defaults to 0.0): mmdet's `MaxIoUAssigner`: anchors whose best IoU
            with a box reaches the first are positive, those below the second background, those between ignored; each
            box also takes every anchor that ties its best IoU if that is at least the third.
    """

    model_type = "pvt_v1"

    def __init__(
        self,
        num_channels=3,
        image_size=224,
        hidden_sizes=(64, 128, 320, 512),
        depths=(2, 2, 2, 2),
        num_attention_heads=(1, 2, 5, 8),
        mlp_ratios=(8, 8, 4, 4),
        sr_ratios=(8, 4, 2, 1),
        patch_sizes=(4, 2, 2, 2),
        qkv_bias=True,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.0,
        layer_norm_eps=1e-6,
        conv_layer_norm_eps=1e-5,
        initializer_range=0.02,
        out_features=None,
        out_indices=None,
        last_stage_cls_token=None,
        fpn_hidden_size=256,
        decoder_hidden_size=128,
        classifier_dropout_prob=0.1,
        semantic_loss_ignore_index=255,
        detection_head_hidden_size=256,
        detection_head_num_convs=4,
        anchor_octave_base_scale=4,
        anchor_scales_per_octave=3,
        anchor_ratios=(0.5, 1.0, 2.0),
        detection_prior_prob=0.01,
        focal_loss_alpha=0.25,
        focal_loss_gamma=2.0,
        detection_pos_iou_threshold=0.5,
        detection_neg_iou_threshold=0.4,
        detection_min_pos_iou=0.0,
        **kwargs,
    ):
        self.num_channels = num_channels
        self.image_size = list(image_size) if isinstance(image_size, (list, tuple)) else image_size
        self.hidden_sizes = list(hidden_sizes)
        self.depths = list(depths)
        self.num_attention_heads = list(num_attention_heads)
        self.mlp_ratios = list(mlp_ratios)
        self.sr_ratios = list(sr_ratios)
        self.patch_sizes = list(patch_sizes)
        self.qkv_bias = qkv_bias
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.layer_norm_eps = layer_norm_eps
        self.conv_layer_norm_eps = conv_layer_norm_eps
        self.initializer_range = initializer_range
        self.last_stage_cls_token = last_stage_cls_token
        self.fpn_hidden_size = fpn_hidden_size
        self.decoder_hidden_size = decoder_hidden_size
        self.classifier_dropout_prob = classifier_dropout_prob
        self.semantic_loss_ignore_index = semantic_loss_ignore_index
        self.detection_head_hidden_size = detection_head_hidden_size
        self.detection_head_num_convs = detection_head_num_convs
        self.anchor_octave_base_scale = anchor_octave_base_scale
        self.anchor_scales_per_octave = anchor_scales_per_octave
        self.anchor_ratios = list(anchor_ratios)
        self.detection_prior_prob = detection_prior_prob
        self.focal_loss_alpha = focal_loss_alpha
        self.focal_loss_gamma = focal_loss_gamma
        self.detection_pos_iou_threshold = detection_pos_iou_threshold
        self.detection_neg_iou_threshold = detection_neg_iou_threshold
        self.detection_min_pos_iou = detection_min_pos_iou
        self._validate_architecture()
        self._validate_detection()
        self.stage_names = [f"stage{index}" for index in range(1, len(self.depths) + 1)]
        self.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        super().__init__(**kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "PvtConfig":
        """`PvtConfig.from_preset("pvt-small", num_labels=10)`; names: pvt-tiny, pvt-small, pvt-medium, pvt-large."""
        key = preset_name(name)
        if key is None:
            raise ValueError(f"Unknown PVT variant {name!r}. Known variants: {', '.join(PRESETS)}.")
        return cls(**{**PRESETS[key], **overrides})

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def image_height_width(self) -> tuple[int, int]:
        size = self.image_size
        return (size, size) if isinstance(size, int) else (size[0], size[1])

    def stage_stride(self, stage_index: int) -> int:
        """Downsampling factor of stage `stage_index`'s feature map relative to the input (4, 8, 16, 32)."""
        return math.prod(self.patch_sizes[: stage_index + 1])

    def position_grid(self, stage_index: int) -> tuple[int, int]:
        """The (height, width) grid that stage `stage_index`'s position embeddings are stored at."""
        stride = self.stage_stride(stage_index)
        height, width = self.image_height_width
        return height // stride, width // stride

    def uses_cls_token(self, dense: bool) -> bool:
        """Whether a model's last stage carries the CLS token: `last_stage_cls_token`, or by default not for dense
        models (`dense=True`: backbone, segmentation) and yes for the classifier."""
        return (not dense) if self.last_stage_cls_token is None else self.last_stage_cls_token

    @property
    def min_input_size(self) -> int:
        """Smallest input side for which every stage (and its key/value reduction) keeps at least one token."""
        return max(self.stage_stride(i) * self.sr_ratios[i] for i in range(self.num_stages))

    def _validate_architecture(self):
        num_stages = len(self.depths)
        lengths = {name: len(getattr(self, name)) for name in _PER_STAGE_FIELDS}
        wrong = {name: length for name, length in lengths.items() if length != num_stages}
        if wrong:
            raise ValueError(
                f"PvtConfig: every per-stage list needs one entry per stage; depths has {num_stages} entries but "
                + ", ".join(f"{name} has {length}" for name, length in wrong.items())
                + ". Give all per-stage lists the same length."
            )
        for name in ("depths", *_PER_STAGE_FIELDS):
            values = getattr(self, name)
            if any(value <= 0 for value in values):
                raise ValueError(f"PvtConfig: all entries of {name} must be positive, got {values}.")
        for stage, (size, heads) in enumerate(zip(self.hidden_sizes, self.num_attention_heads)):
            if size % heads:
                raise ValueError(
                    f"PvtConfig: stage {stage + 1} has hidden size {size}, which is not divisible by its "
                    f"{heads} attention heads. Choose a hidden size that is a multiple of the number of heads."
                )
        if self.sr_ratios[-1] != 1:
            raise ValueError(
                f"PvtConfig: the last stage carries the CLS token, so its sr_ratio must be 1 (got {self.sr_ratios[-1]})."
            )
        if self.fpn_hidden_size <= 0 or self.decoder_hidden_size <= 0:
            raise ValueError(
                f"PvtConfig: fpn_hidden_size ({self.fpn_hidden_size}) and decoder_hidden_size "
                f"({self.decoder_hidden_size}) must be positive."
            )
        if self.num_channels <= 0 or min(self.image_height_width) <= 0:
            raise ValueError(
                f"PvtConfig: num_channels ({self.num_channels}) and image_size ({self.image_size}) must be positive."
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate", "classifier_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"PvtConfig: {name} must be in [0, 1), got {getattr(self, name)}.")

    def _validate_detection(self):
        if self.detection_head_hidden_size <= 0 or self.detection_head_num_convs < 0:
            raise ValueError(
                f"PvtConfig: detection_head_hidden_size ({self.detection_head_hidden_size}) must be positive and "
                f"detection_head_num_convs ({self.detection_head_num_convs}) at least 0."
            )
        if self.anchor_octave_base_scale <= 0 or self.anchor_scales_per_octave < 1 or not self.anchor_ratios:
            raise ValueError(
                f"PvtConfig: anchor_octave_base_scale ({self.anchor_octave_base_scale}) must be positive, "
                f"anchor_scales_per_octave ({self.anchor_scales_per_octave}) at least 1 and anchor_ratios "
                f"({self.anchor_ratios}) non-empty."
            )
        if any(ratio <= 0 for ratio in self.anchor_ratios):
            raise ValueError(f"PvtConfig: anchor_ratios must be positive, got {self.anchor_ratios}.")
        if not 0.0 < self.detection_prior_prob < 1.0:
            raise ValueError(f"PvtConfig: detection_prior_prob must be in (0, 1), got {self.detection_prior_prob}.")
        if not 0.0 <= self.focal_loss_alpha <= 1.0 or self.focal_loss_gamma < 0:
            raise ValueError(
                f"PvtConfig: focal_loss_alpha ({self.focal_loss_alpha}) must be in [0, 1] and focal_loss_gamma "
                f"({self.focal_loss_gamma}) non-negative."
            )
        if not 0.0 <= self.detection_neg_iou_threshold <= self.detection_pos_iou_threshold <= 1.0:
            raise ValueError(
                "PvtConfig: the assigner needs 0 <= detection_neg_iou_threshold <= detection_pos_iou_threshold <= 1, "
                f"got {self.detection_neg_iou_threshold} and {self.detection_pos_iou_threshold}."
            )


__all__ = ["PvtConfig", "PRESETS", "preset_name"]
