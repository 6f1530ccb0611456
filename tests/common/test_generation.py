"""The generation service (faceclip.generation): defaults, seeds, batching, progress and output safety."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from faceclip.generation import (
    MAX_SEED,
    FaceReference,
    GenerationSettings,
    OutputError,
    OutputFolder,
    SettingsError,
    consecutive_seeds,
    generate_images,
    image_file_name,
)
from faceclip.outputs import read_png_metadata
from faceclip.pipelines import PreparedFace
from faceclip.pipelines.sdxl.family import DEFAULTS
from faceclip.registry import load_pipeline


@pytest.fixture(scope="module")
def pipe():
    pipe = load_pipeline("tiny-random")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def face() -> FaceReference:
    tensor = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return FaceReference(PreparedFace(tensor), file_name="me.jpg", sha256="ab" * 32, face_index=0)


def test_defaults_come_from_the_family_and_the_denoiser(pipe):
    settings = GenerationSettings(prompts=(" a photo ",)).resolve(pipe)
    assert settings.prompts == ("a photo",)
    assert (settings.height, settings.width) == pipe.default_size == (72, 56)
    assert settings.num_inference_steps == DEFAULTS.num_inference_steps == 50
    assert settings.guidance_scale == DEFAULTS.guidance_scale
    assert settings.negative_prompt == DEFAULTS.negative_prompt
    assert GenerationSettings(prompts=("a",), negative_prompt="").resolve(pipe).negative_prompt == ""


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"prompts": ("", "  ")}, "prompts"),
        ({"seeds": ()}, "seeds"),
        ({"seeds": (MAX_SEED + 1,)}, "seeds"),
        ({"seeds": (-1,)}, "seeds"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"height": 100}, "height"),
        ({"width": 4}, "width"),
        ({"guidance_scale": -0.5}, "guidance_scale"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_settings_name_their_field(changes, field):
    with pytest.raises(SettingsError) as error:
        GenerationSettings(**{"prompts": ("a",), **changes}).validate()
    assert error.value.field == field and str(error.value).startswith(field)


def test_one_seed_range_without_wrapping():
    assert consecutive_seeds(MAX_SEED - 1, 2) == (MAX_SEED - 1, MAX_SEED)
    with pytest.raises(SettingsError, match=f"from 0 to {MAX_SEED - 2} for 3"):
        consecutive_seeds(MAX_SEED - 1, 3)
    with pytest.raises(SettingsError):
        consecutive_seeds(0, 0)


def test_every_prompt_with_every_seed_and_full_metadata(pipe, face):
    settings = GenerationSettings(prompts=("a", "b"), seeds=(4, 5, 6), num_inference_steps=2, batch_size=2)
    progress = []
    images = list(
        generate_images(pipe, face, settings, model="tiny-random", on_step=lambda *a: progress.append(a))
    )
    assert [(g.prompt_index, g.seed) for g in images] == [(0, 4), (0, 5), (0, 6), (1, 4), (1, 5), (1, 6)]
    assert all(g.image.size == (56, 72) for g in images)
    meta = images[4].metadata
    assert meta["prompt"] == "b" and meta["seed"] == 5 and meta["steps"] == 2 and meta["size"] == "72x56"
    assert (
        meta["face_file"] == "me.jpg" and meta["face_sha256"] == "ab" * 32 and meta["model"] == "tiny-random"
    )
    assert progress[-1] == (12, 12) and [done for done, _ in progress] == sorted(done for done, _ in progress)
    # one generator per image: image (prompt b, seed 5) alone is the same image
    alone = next(generate_images(pipe, face, GenerationSettings(("b",), (5,), num_inference_steps=2)))
    assert alone.image.tobytes() == images[4].image.tobytes()


def test_images_without_identity(pipe):
    settings = GenerationSettings(prompts=("a",), seeds=(1,), num_inference_steps=1)
    (image,) = generate_images(pipe, None, settings, extra_metadata={"identity": None})
    assert image.metadata["face_sha256"] is None and image.metadata["identity"] is None


def test_output_folder_never_replaces_unless_told(tmp_path, pipe, face):
    settings = GenerationSettings(prompts=("a",), seeds=(1,), num_inference_steps=1)
    (generated,) = generate_images(pipe, face, settings)
    folder = OutputFolder(tmp_path)
    assert folder.save(generated).name == image_file_name(0, 1) == "p000_seed1.png"
    assert folder.save(generated).name == "p000_seed1-2.png"
    assert OutputFolder(tmp_path, overwrite=True).save(generated).name == "p000_seed1.png"
    assert read_png_metadata(tmp_path / "p000_seed1.png")["seed"] == 1


def test_output_folder_never_writes_over_an_input(tmp_path):
    photo = tmp_path / "p000_seed1.png"
    Image.new("RGB", (4, 4)).save(photo)
    before = photo.read_bytes()
    assert OutputFolder(tmp_path, inputs=[photo]).save_png(Image.new("RGB", (4, 4), 9), photo.name).name == (
        "p000_seed1-2.png"
    )
    folder = OutputFolder(tmp_path, inputs=[photo], overwrite=True)
    with pytest.raises(OutputError, match="one of this run's inputs"):
        folder.check_names(["grid.png", photo.name])
    with pytest.raises(OutputError):
        folder.save_png(Image.new("RGB", (4, 4), 9), photo.name)
    assert photo.read_bytes() == before


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match=r"cannot create the output folder .* is a file"):
        OutputFolder(blocker / "sub")
