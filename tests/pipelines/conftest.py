"""Shared fixtures: tiny random components (2 steps, 64 x 64, CPU) and a small face photo."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from faceclip.pipelines import FaceCLIPStableDiffusionXLPipeline, build_tiny_components

DATA = Path(__file__).parents[1] / "data" / "pipelines"


@pytest.fixture(scope="session")
def face_photo() -> Path:
    return DATA / "astronaut_192.jpg"


@pytest.fixture
def pipe() -> FaceCLIPStableDiffusionXLPipeline:
    pipe = FaceCLIPStableDiffusionXLPipeline(**build_tiny_components(seed=0))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def face() -> torch.Tensor:
    """An 'aligned' face tensor (1, 3, 64, 64) in [0, 1]."""
    return torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
