"""The released FaceCLIP-SDXL weights end to end (needs them on disk or in the HF cache; skipped by default)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.weights


def test_released_weights_keep_the_identity(face_photo, tmp_path):
    from faceclip.face import FaceAnalyzer
    from faceclip.face.recognition import cosine_similarity
    from faceclip.registry import load_pipeline

    cuda = torch.cuda.is_available()
    pipe = load_pipeline("ByteDance/FaceCLIP", torch_dtype=torch.bfloat16 if cuda else torch.float32)
    if cuda:
        pipe.enable_model_cpu_offload()
    image = pipe(
        face_image=face_photo,
        prompt="a woman wearing a blue denim shirt, on a rocky desert plateau",
        num_inference_steps=30,
        generator=torch.Generator().manual_seed(453563),
    ).images[0]
    image.save(tmp_path / "released.png")
    assert image.size == (864, 1152)
    analyzer = FaceAnalyzer()
    similarity = cosine_similarity(analyzer.embed(str(face_photo)), analyzer.embed(image))
    assert similarity > 0.3, f"identity similarity {similarity:.3f} (SFace); image in {tmp_path}"
