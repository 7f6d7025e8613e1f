"""Hub remote code for transformers' own heads with a PVT v1 backbone: UperNet, Mask2Former, MaskFormer, DETR.

transformers builds a head's backbone from `backbone_config["model_type"]` ("pvt_v1"), which it only knows once
PVT's config and backbone are registered; without that a saved head fails with `KeyError: 'pvt_v1'`. A head folder
written by `modeling_pvt.heads.save_head_model` points its `auto_map` here: importing this file registers PVT, and the
classes below are transformers' own under names of their own (so loading never marks transformers' classes as remote
code). Imports only transformers and this folder's PVT files."""

from transformers import (
    AutoBackbone,
    AutoConfig,
    DetrConfig,
    DetrForObjectDetection,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    MaskFormerConfig,
    MaskFormerForInstanceSegmentation,
    UperNetConfig,
    UperNetForSemanticSegmentation,
)
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .configuration_pvt import PvtConfig
from .modeling_pvt import PvtBackbone

# Where the package is installed, its own classes are registered already and stay in charge.
if PvtConfig.model_type not in CONFIG_MAPPING:
    AutoConfig.register(PvtConfig.model_type, PvtConfig)
    AutoBackbone.register(PvtConfig, PvtBackbone)


class PvtUperNetConfig(UperNetConfig):
    pass


class PvtUperNetForSemanticSegmentation(UperNetForSemanticSegmentation):
    config_class = PvtUperNetConfig


class PvtMask2FormerConfig(Mask2FormerConfig):
    pass


class PvtMask2FormerForUniversalSegmentation(Mask2FormerForUniversalSegmentation):
    config_class = PvtMask2FormerConfig


class PvtMaskFormerConfig(MaskFormerConfig):
    pass


class PvtMaskFormerForInstanceSegmentation(MaskFormerForInstanceSegmentation):
    config_class = PvtMaskFormerConfig


class PvtDetrConfig(DetrConfig):
    pass


class PvtDetrForObjectDetection(DetrForObjectDetection):
    config_class = PvtDetrConfig
