"""FaceCLIP models: the joint identity-text encoder and its parts.

``FaceCLIPEncoder`` = two ``FaceCLIPBranch`` es (face ViT + CLIP text tower + face-text fuser). Build a random
one from a packaged config with ``create_encoder``, load released weights with ``FaceCLIPEncoder.from_official``
or converted ones with ``FaceCLIPEncoder.from_pretrained``.
"""

from faceclip.models.branch import BranchConfig, BranchOutput, FaceCLIPBranch
from faceclip.models.encoder import (
    FaceCLIPEncoder,
    FaceCLIPEncoderOutput,
    create_encoder,
    encoder_config,
    list_configs,
)
from faceclip.models.face_vit import FaceFeatures, FaceViT, FaceViTConfig
from faceclip.models.tokenizer import CLIPTokenizer, get_tokenizer

__all__ = [
    "BranchConfig",
    "BranchOutput",
    "CLIPTokenizer",
    "FaceCLIPBranch",
    "FaceCLIPEncoder",
    "FaceCLIPEncoderOutput",
    "FaceFeatures",
    "FaceViT",
    "FaceViTConfig",
    "create_encoder",
    "encoder_config",
    "get_tokenizer",
    "list_configs",
]
