"""A fake pipeline with the demo's contract (prepare_face, __call__), for tests that need no model."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from faceclip.face import DetectedFace, NoFaceFoundError


class FakePipeline:
    """Records calls; makes a flat image whose colour depends on the generator's seed."""

    def __init__(self, finds_face: bool = True, fails_with: Exception | None = None):
        self.finds_face = finds_face
        self.fails_with = fails_with
        self.calls: list[dict] = []

    def prepare_face(self, face_image, face_index=None):
        if not self.finds_face:
            raise NoFaceFoundError("no face found in the image")
        detection = DetectedFace(
            box=np.array([10.0, 12.0, 50.0, 60.0], dtype=np.float32),
            score=0.93,
            landmarks=np.array([[20, 30], [40, 30], [30, 40], [22, 50], [38, 50]], dtype=np.float32),
        )
        return SimpleNamespace(
            tensor=torch.full((1, 3, 448, 448), 0.5),
            image=Image.new("RGB", (448, 448), (9, 9, 9)),
            detection=detection,
        )

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        if self.fails_with is not None:
            raise self.fails_with
        for step in range(kwargs["num_inference_steps"]):
            kwargs["callback_on_step_end"](self, step, 999 - step, {})
        value = int(torch.randint(0, 256, (1,), generator=kwargs["generator"]))
        return SimpleNamespace(images=[Image.new("RGB", (kwargs["width"], kwargs["height"]), (value, 0, 0))])


@pytest.fixture
def fake_pipe() -> FakePipeline:
    return FakePipeline()


@pytest.fixture
def photo_path(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (80, 96), (200, 150, 120)).save(path)
    return path
