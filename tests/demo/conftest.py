"""A fake pipeline with the demo's contract (prepare_face, __call__, default_size, generation_defaults), for
tests that need no model; tiny real pipelines of both families, loaded once per test session."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from faceclip.face import DetectedFace, NoFaceFoundError


def _face(shift: float, size: float) -> DetectedFace:
    x, y = 10.0 + shift, 12.0
    return DetectedFace(
        box=np.array([x, y, x + size, y + size * 1.2], dtype=np.float32),
        score=0.93,
        landmarks=np.array(
            [[x + 10, y + 18], [x + 30, y + 18], [x + 20, y + 28], [x + 12, y + 38], [x + 28, y + 38]],
            dtype=np.float32,
        ),
    )


class FakeScheduler:
    """Named in the metadata, like the pipeline's real scheduler."""


class FakePipeline:
    """Records calls and moves; makes a flat image whose colour depends on the generator's seed.

    ``defaults``: the family defaults it stands in for (FaceCLIP-SDXL's unless given).
    """

    dtype = torch.float32
    default_size = (64, 64)

    def __init__(self, num_faces: int = 1, fails_with: Exception | None = None, defaults=None):
        from faceclip.pipelines.sdxl.family import DEFAULTS

        self.generation_defaults = defaults or DEFAULTS
        self.device = torch.device("cpu")
        self.moves: list[str] = []
        self.faces = [_face(shift=60 * i, size=40 - 5 * i) for i in range(num_faces)]  # largest first
        self.face_analyzer = SimpleNamespace(detect=lambda image: list(self.faces))
        self.fails_with = fails_with
        self.calls: list[dict] = []
        self.scheduler = FakeScheduler()

    def to(self, device):
        self.device = torch.device(device)
        self.moves.append(str(device))
        return self

    def prepare_face(self, face_image, face_index=None):
        if not self.faces or (face_index or 0) >= len(self.faces):
            raise NoFaceFoundError("no face found in the image")
        detection = self.faces[face_index or 0]
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
        generators = kwargs["generator"]
        generators = generators if isinstance(generators, list) else [generators]
        assert len(generators) == kwargs["num_images_per_prompt"]
        values = [int(torch.randint(0, 256, (1,), generator=g)) for g in generators]
        size = (kwargs["width"], kwargs["height"])
        return SimpleNamespace(images=[Image.new("RGB", size, (value, 0, 0)) for value in values])


@pytest.fixture
def fake_pipe() -> FakePipeline:
    return FakePipeline()


@pytest.fixture
def photo_path(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (80, 96), (200, 150, 120)).save(path)
    return path


@pytest.fixture(scope="session")
def tiny_pipes():
    """``{"tiny-random": FaceCLIP-SDXL, "tiny-random-flux": FaceT5-FLUX}``, tiny random components on the CPU."""
    from faceclip.registry import load_pipeline

    pipes = {name: load_pipeline(name).to("cpu") for name in ("tiny-random", "tiny-random-flux")}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    return pipes
