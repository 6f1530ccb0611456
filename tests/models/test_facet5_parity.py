"""Parity with the released FaceT5 encoder: seeded weights in the released layout vs its golden outputs.

The goldens come from the released ``FaceT5FluxWrapper`` (fp32, CPU) at depths T5 2, fuser 2, ViT 2 and full
width, one row per call, with weights drawn by ``facet5_reference.seeded_released_state_dict``. The weights
take about 4.5 GB of RAM (they are taken over by the model, not copied).
"""

from __future__ import annotations

import gzip
import json
import os
import resource

import numpy as np
import pytest
import torch
from PIL import Image

from faceclip.models.facet5_encoder import FaceT5Encoder, flux_clip_input_ids

from .facet5_reference import DATA, reduced_manifest, seeded_released_state_dict

DEPTHS = (2, 2, 2)


def golden() -> dict[str, np.ndarray]:
    with np.load(DATA / "golden_seed0_subset.npz") as data:
        return dict(data)


def golden_prompts() -> dict[str, list[str]]:
    return json.loads((DATA / "golden_prompts.json").read_text())


def golden_faces() -> dict[str, torch.Tensor]:
    """Faces as the golden procedure makes them: random A0, A1, C0, C1 (seed 1), the aligned astronaut, zeros."""
    generator = torch.Generator(device="cpu").manual_seed(1)
    faces = [torch.randint(0, 256, (3, 448, 448), generator=generator, dtype=torch.int64) for _ in range(4)]
    astronaut = torch.from_numpy(np.array(Image.open(DATA / "astronaut_aligned_448.png").convert("RGB")))
    return {
        "A": torch.stack(faces[:2]).float() / 255,
        "B": torch.stack([astronaut.permute(2, 0, 1).float() / 255, torch.zeros(3, 448, 448)]),
        "C": torch.stack(faces[2:]).float() / 255,
    }


def test_golden_faces_are_regenerated_exactly():
    expected = golden()
    for case, faces in golden_faces().items():
        np.testing.assert_allclose(
            faces.double().sum(dim=(1, 2, 3)).numpy(), expected[f"case{case}_faces_sum"], rtol=1e-12
        )


def test_flux_clip_tokenization_matches_the_goldens():
    expected, prompts = golden(), golden_prompts()
    for case in "ABC":
        ids = flux_clip_input_ids(prompts[case])
        assert torch.equal(ids, torch.from_numpy(expected[f"case{case}_clip_input_ids"])), case


def test_reduced_manifest_has_the_golden_key_count():
    assert len(reduced_manifest(DEPTHS)) == 350
    assert len(reduced_manifest((3, 3, 2))) == 401


def check_seeded_checksums(state_dict: dict[str, torch.Tensor]) -> int:
    """Compare every seeded tensor with the checksum table (numel, sums in float64, first and last element)."""
    lines = gzip.decompress((DATA / "seeded_init_checksums.tsv.gz").read_bytes()).decode().splitlines()[1:]
    assert sorted(line.split("\t")[0] for line in lines) == sorted(state_dict)
    for line in lines:
        key, _rule, numel, total, total_sq, first, last = line.split("\t")
        flat = state_dict[key].reshape(-1)
        assert flat.numel() == int(numel), key
        # first/last are printed with %.9g, which round-trips float32 exactly.
        assert flat[0] == torch.tensor(float(first), dtype=flat.dtype), key
        assert flat[-1] == torch.tensor(float(last), dtype=flat.dtype), key
        sums = [0.0, 0.0]
        for chunk in flat.split(1 << 22):  # float64 copies of 4 M values at a time
            chunk = chunk.double()
            sums[0] += chunk.sum().item()
            sums[1] += chunk.square().sum().item()
        assert sums[0] == pytest.approx(float(total), rel=1e-8, abs=1e-9), key
        assert sums[1] == pytest.approx(float(total_sq), rel=1e-8), key
    return len(lines)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@pytest.mark.slow
def test_parity_with_released_facet5_encoder():
    torch.set_num_threads(min(2, os.cpu_count() or 1))  # the goldens were made with 2 threads
    state_dict = seeded_released_state_dict(DEPTHS, seed=0)
    assert check_seeded_checksums(state_dict) == 350
    encoder = FaceT5Encoder.from_official(state_dict)  # the converter users run; tensors taken over
    del state_dict
    assert (encoder.config.t5_config["num_layers"], encoder.config.fuser_config["layers"]) == DEPTHS[:2]
    assert encoder.config.face_config["depth"] == DEPTHS[2]

    expected, prompts, faces = golden(), golden_prompts(), golden_faces()
    errors = {}
    with torch.no_grad():
        for case in "ABC":
            t5_ids = torch.from_numpy(expected[f"case{case}_t5_input_ids"])
            out = encoder(face_images=faces[case], prompts=prompts[case], t5_input_ids=t5_ids)
            assert torch.equal(out.clip_input_ids, torch.from_numpy(expected[f"case{case}_clip_input_ids"]))
            assert out.prompt_embeds.shape == (2, 512, 4096) and out.pooled_prompt_embeds.shape == (2, 768)
            embeds = torch.from_numpy(expected[f"case{case}_prompt_embeds_slice"])
            pooled = torch.from_numpy(expected[f"case{case}_pooled_prompt_embeds"])
            errors[case] = (
                (out.prompt_embeds[:, ::4, ::16] - embeds).abs().max().item(),
                (out.pooled_prompt_embeds - pooled).abs().max().item(),
            )
            torch.testing.assert_close(out.prompt_embeds[:, ::4, ::16], embeds, atol=1e-4, rtol=0, msg=case)
            torch.testing.assert_close(out.pooled_prompt_embeds, pooled, atol=1e-4, rtol=0, msg=case)
    print(f"max abs errors (prompt_embeds, pooled) per case: {errors}; peak RSS {peak_rss_gb():.2f} GB")
