"""Parity with the released encoder: seeded weights in the released layout vs golden outputs.

The golden outputs were produced by the released ``FaceCLIP_L_G_Wrapper`` (fp32, CPU) with weights drawn by
the seeded procedure in ``conftest.seeded_released_state_dict``. Builds the full-size model (~7 GB of RAM).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from faceclip.models import FaceCLIPEncoder

from .conftest import DATA, seeded_released_state_dict

FACE_SIZES = {"A": 112, "C": 448}


def golden_faces() -> dict[str, torch.Tensor]:
    """Faces A0, A1, C0, C1 as in the golden procedure: 8-bit random images / 255 from one seeded generator."""
    generator = torch.Generator(device="cpu").manual_seed(1)
    faces = {}
    for case, size in FACE_SIZES.items():
        pair = [
            torch.randint(0, 256, (3, size, size), generator=generator, dtype=torch.int64) for _ in range(2)
        ]
        faces[case] = torch.stack(pair).to(torch.float32) / 255
    faces["B"] = torch.zeros(2, 3, 112, 112)
    return faces


def test_golden_faces_are_regenerated_exactly():
    golden = np.load(DATA / "golden_seed0_subset.npz")
    for case, faces in golden_faces().items():
        np.testing.assert_allclose(
            faces.double().sum(dim=(1, 2, 3)).numpy(), golden[f"case{case}_faces_sum"], rtol=1e-12
        )
        np.testing.assert_array_equal(faces[:, :, :4, :4].numpy(), golden[f"case{case}_faces_corner"])


def check_seeded_checksums(state_dict: dict[str, torch.Tensor]) -> int:
    lines = (DATA / "seeded_init_checksums_subset.tsv").read_text().splitlines()[1:]
    for line in lines:
        key, _rule, numel, total, total_sq, first, last = line.split("\t")
        flat = state_dict[key].reshape(-1)
        assert flat.numel() == int(numel), key
        # first/last are printed with %.9g, which round-trips float32 exactly.
        assert flat[0] == torch.tensor(float(first), dtype=flat.dtype), key
        assert flat[-1] == torch.tensor(float(last), dtype=flat.dtype), key
        assert flat.double().sum().item() == pytest.approx(float(total), rel=1e-8, abs=1e-9), key
        assert flat.double().square().sum().item() == pytest.approx(float(total_sq), rel=1e-8), key
    return len(lines)


@pytest.mark.slow
def test_parity_with_released_encoder():
    torch.set_num_threads(os.cpu_count() or 1)  # the full-size model wants every core (reset after the test)
    state_dict = seeded_released_state_dict(seed=0)
    assert check_seeded_checksums(state_dict) == 10
    encoder = FaceCLIPEncoder.from_official(state_dict)  # tensors are taken over, not copied
    del state_dict
    assert not encoder.config.share_face_encoder  # the seeded face ViTs differ

    golden = np.load(DATA / "golden_seed0_subset.npz")
    prompts = json.loads((DATA / "golden_prompts.json").read_text())
    faces = golden_faces()
    with torch.no_grad():
        for case in "ABC":
            has_face = torch.from_numpy(golden[f"case{case}_face_exist_mask"])
            # Case B is the negative path: black faces, which `face_images=None` produces too.
            images = None if case == "B" else faces[case]
            out = encoder(face_images=images, prompts=prompts[case], has_face=has_face)
            assert torch.equal(out.input_ids, torch.from_numpy(golden[f"case{case}_input_ids"])), case
            expected = torch.from_numpy(golden[f"case{case}_prompt_embeds_slice"])
            torch.testing.assert_close(out.prompt_embeds[:, ::4, ::8], expected, atol=1e-4, rtol=0, msg=case)
            expected = torch.from_numpy(golden[f"case{case}_pooled"])
            torch.testing.assert_close(out.pooled_prompt_embeds, expected, atol=1e-4, rtol=0, msg=case)
