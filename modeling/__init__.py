"""The Hub code of E2, copied into every checkpoint. Installed as `e2_hf.modeling`."""

from .configuration_e2clip import E2CLIPConfig, E2CLIPTextConfig, E2CLIPVisionConfig
from .embedding_e2clip import E2CLIPEmbedder, E2CLIPImageEmbeddings
from .image_processing_e2clip import E2CLIPImageProcessor, clip_image_processor
from .modeling_e2clip import E2CLIPModel, E2CLIPOutput, E2CLIPPreTrainedModel, E2CLIPVisionOutput
from .processing_e2clip import E2CLIPProcessor, build_product_text

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
