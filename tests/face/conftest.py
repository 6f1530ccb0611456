"""Shared fixtures for the face tests: real faces from tests/data/faces and one analyzer per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from faceclip.face import FaceAnalyzer

DATA = Path(__file__).resolve().parents[1] / "data" / "faces"
ASTRONAUT = DATA / "astronaut.png"


@pytest.fixture(scope="session")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer(backend="opencv")


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    return ASTRONAUT


@pytest.fixture(scope="session")
def astronaut() -> Image.Image:
    with Image.open(ASTRONAUT) as image:
        return image.convert("RGB")
