"""FaceCLIP models: the joint identity-text encoder and its parts.

``FaceCLIPEncoder`` = two ``FaceCLIPBranch`` es (face ViT + CLIP text tower + face-text fuser). Build a random
one from a packaged config with ``create_encoder``, load released weights with ``FaceCLIPEncoder.from_official``
or converted ones with ``FaceCLIPEncoder.from_pretrained``.
"""

from faceclip.models.encoder import (
    FaceCLIPEncoder,
    FaceCLIPEncoderOutput,
    create_encoder,
    encoder_config,
    list_configs,
)
from faceclip.models.facet5_encoder import FaceT5Encoder, FaceT5EncoderOutput

__all__ = [
    "FaceCLIPEncoder",
    "FaceCLIPEncoderOutput",
    "FaceT5Encoder",
    "FaceT5EncoderOutput",
    "create_encoder",
    "encoder_config",
    "list_configs",
]
