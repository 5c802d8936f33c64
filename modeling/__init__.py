"""The Hub code of E2, copied into every checkpoint (its modules; not this file). Installed as
`e2_hf.modeling`: importing it registers E2 with the transformers Auto classes."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
)

from .configuration_e2clip import E2CLIPConfig, E2CLIPTextConfig, E2CLIPVisionConfig
from .embedding_e2clip import E2CLIPEmbedder, E2CLIPImageEmbeddings
from .image_processing_e2clip import E2CLIPImageProcessor, clip_image_processor
from .modeling_e2clip import E2CLIPModel, E2CLIPOutput, E2CLIPPreTrainedModel, E2CLIPVisionOutput
from .processing_e2clip import E2CLIPProcessor, build_product_text


def _register_auto_classes() -> None:
    """In this process, the Auto classes load E2 folders with this code; and each class is registered
    for its Auto class (`register_for_auto_class`, as transformers does when it loads the folder as
    remote code), so that saving it copies its code file and writes its `auto_map` entry."""
    AutoConfig.register(E2CLIPConfig.model_type, E2CLIPConfig, exist_ok=True)
    AutoModel.register(E2CLIPConfig, E2CLIPModel, exist_ok=True)
    AutoModelForZeroShotImageClassification.register(E2CLIPConfig, E2CLIPModel, exist_ok=True)
    AutoImageProcessor.register(E2CLIPConfig, slow_image_processor_class=E2CLIPImageProcessor, exist_ok=True)
    AutoProcessor.register(E2CLIPConfig, E2CLIPProcessor, exist_ok=True)
    E2CLIPConfig.register_for_auto_class("AutoConfig")
    E2CLIPModel.register_for_auto_class("AutoModel")
    E2CLIPImageProcessor.register_for_auto_class("AutoImageProcessor")
    E2CLIPProcessor.register_for_auto_class("AutoProcessor")


_register_auto_classes()

__all__ = [
    "E2CLIPConfig",
    "E2CLIPEmbedder",
    "E2CLIPImageEmbeddings",
    "E2CLIPImageProcessor",
    "E2CLIPModel",
    "E2CLIPOutput",
    "E2CLIPPreTrainedModel",
    "E2CLIPProcessor",
    "E2CLIPTextConfig",
    "E2CLIPVisionConfig",
    "E2CLIPVisionOutput",
    "build_product_text",
    "clip_image_processor",
]
