"""PVT v1 for 🤗 Transformers. Importing the package registers the classes with the Auto* factories, so
`AutoModel.from_pretrained(folder)` works without `trust_remote_code` when the package is installed."""

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForObjectDetection,
    AutoModelForSemanticSegmentation,
)
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING

from .configuration_pvt import PRESETS, PvtConfig
from .image_processing_pvt import PvtImageProcessor, PvtV1ImageProcessor
from .modeling_pvt import (
    PvtBackbone,
    PvtForImageClassification,
    PvtForSemanticSegmentation,
    PvtModel,
    PvtPreTrainedModel,
)
from .modeling_pvt_detection import PvtForObjectDetection

# exist_ok: the auto mappings look classes up by name, and transformers' native PVT also has a "PvtConfig". The
# registration is keyed by our class object, so the native model keeps its own mapping.
AutoConfig.register(PvtConfig.model_type, PvtConfig)
AutoModel.register(PvtConfig, PvtModel, exist_ok=True)
AutoModelForImageClassification.register(PvtConfig, PvtForImageClassification, exist_ok=True)
AutoModelForSemanticSegmentation.register(PvtConfig, PvtForSemanticSegmentation, exist_ok=True)
AutoBackbone.register(PvtConfig, PvtBackbone, exist_ok=True)
AutoModelForObjectDetection.register(PvtConfig, PvtForObjectDetection, exist_ok=True)
# Not AutoImageProcessor.register: it looks our config up by its class name, finds the native "PvtConfig", imports
# the native processors (warning about torchvision) and keeps the native one as this config's torchvision backend.
IMAGE_PROCESSOR_MAPPING.register(PvtConfig, {"pil": PvtV1ImageProcessor}, exist_ok=True)

# `save_pretrained` then writes `auto_map` and copies the code files, making the folder Hub remote code.
PvtConfig.register_for_auto_class()
PvtModel.register_for_auto_class("AutoModel")
PvtForImageClassification.register_for_auto_class("AutoModelForImageClassification")
PvtForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
PvtBackbone.register_for_auto_class("AutoBackbone")
PvtForObjectDetection.register_for_auto_class("AutoModelForObjectDetection")
PvtV1ImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "PRESETS",
    "PvtConfig",
    "PvtModel",
    "PvtForImageClassification",
    "PvtForSemanticSegmentation",
    "PvtBackbone",
    "PvtForObjectDetection",
    "PvtImageProcessor",
    "PvtV1ImageProcessor",
    "PvtPreTrainedModel",
]
