"""The Gradio page without a browser: its wiring, queue limits and event functions (with a fake pipeline)."""

from __future__ import annotations

import hashlib
import warnings

import pytest

from conftest import FakePipeline

gr = pytest.importorskip("gradio")

from faceclip.demo import DemoConfig, FormValues, create_demo  # noqa: E402
from faceclip.outputs import read_png_metadata  # noqa: E402


@pytest.fixture
def config(tmp_path):
    return DemoConfig(
        output_dir=tmp_path / "out",
        model_name="fake",
        defaults=FormValues(prompt="a photo", num_images=2, steps=2, width=64, height=64),
        queue_size=5,
    )


def _no_progress(*args, **kwargs):
    pass


def _event(demo, name):
    return next(fn for fn in demo.fns.values() if fn.name == name)


def test_queue_and_concurrency_limits(fake_pipe, config):
    demo = create_demo(fake_pipe, config)
    assert demo._queue.max_size == 5
    generate = _event(demo, "on_generate")
    assert generate.queue and generate.concurrency_limit == 1  # one pipeline: one run at a time
    assert {fn.concurrency_limit for fn in demo.fns.values() if fn.name == "on_photo"} == {1}
    photo = _event(demo, "on_photo")
    assert photo.preprocess is False  # the handler reads the upload itself, to word its own errors


@pytest.mark.slow  # imports diffusers
def test_default_form_follows_the_pipeline():
    from faceclip.pipelines.sdxl.family import DEFAULTS

    defaults = DemoConfig().defaults
    assert defaults.negative_prompt == DEFAULTS.negative_prompt
    assert (defaults.width, defaults.height) == (DEFAULTS.width, DEFAULTS.height)


def test_photo_event_refuses_a_non_image_in_words(fake_pipe, config, tmp_path):
    on_photo = _event(create_demo(fake_pipe, config), "on_photo").fn
    fake = tmp_path / "cat.jpg"
    fake.write_bytes(b"\x00" * 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gr.Warning outside a request only warns
        face, annotated, aligned, message, _ = on_photo({"path": str(fake), "orig_name": "cat.jpg"})
    assert face is None and annotated is None and aligned is None
    assert message.startswith("**Cannot use this photo.**") and "not an image" in message


def test_photo_then_generate(fake_pipe, config, photo_path):
    demo = create_demo(fake_pipe, config)
    face, annotated, aligned, message, choice = _event(demo, "on_photo").fn({"path": str(photo_path)})
    assert choice.visible is False  # one face: nothing to choose
    assert annotated.size == (80, 96)
    assert face is not None and aligned.size == (448, 448) and message.startswith("Face found")

    on_generate = _event(demo, "on_generate").fn
    updates = list(
        on_generate(
            face, "fake", "a photo", "", 2, 2, 5.0, 1.0, 11, "Custom 64×64", progress=lambda *a, **k: None
        )
    )
    gallery, files = updates[-1]
    assert len(updates) == 2 and gallery == files and len(files) == 2  # the gallery grows image by image
    assert [read_png_metadata(p)["seed"] for p in files] == [11, 12]
    meta = read_png_metadata(files[0])
    assert (meta["face_file"], meta["face_index"]) == ("photo.jpg", 0)
    assert meta["face_sha256"] == hashlib.sha256(photo_path.read_bytes()).hexdigest()


def test_choosing_another_face(config, photo_path):
    pipe = FakePipeline(num_faces=2)
    demo = create_demo(pipe, config)
    on_photo = [fn for fn in demo.fns.values() if fn.name == "on_photo"]
    assert len(on_photo) == 2  # a new photo, and a new choice of face
    face, _, _, message, choice = on_photo[0].fn({"path": str(photo_path)})
    assert choice.visible is True and choice.value == "1" and "2 faces found" in message
    face, _, _, message, choice = on_photo[1].fn({"path": str(photo_path)}, "2")
    assert face.face.detection is pipe.faces[1] and choice.value == "2" and "using face 2" in message
    assert face.face_index == 1


def test_generate_without_a_face_changes_nothing(fake_pipe, config):
    on_generate = _event(create_demo(fake_pipe, config), "on_generate").fn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        updates = list(
            on_generate(
                None, "fake", "a photo", "", 1, 2, 5.0, 1.0, 0, "Custom 64×64", progress=lambda *a, **k: None
            )
        )
    assert len(updates) == 1 and all(isinstance(u, type(gr.skip())) for u in updates[0])
    assert fake_pipe.calls == []


def test_generation_failure_is_a_short_message(config, photo_path):
    pipe = FakePipeline(fails_with=RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    demo = create_demo(pipe, config)
    face = _event(demo, "on_photo").fn({"path": str(photo_path)})[0]
    on_generate = _event(demo, "on_generate").fn
    with pytest.raises(gr.Error, match="ran out of memory"):
        list(
            on_generate(face, "fake", "a photo", "", 1, 2, 5.0, 1.0, 0, "Custom 64×64", progress=_no_progress)
        )


def _texts(demo):
    return [block.value for block in demo.blocks.values() if isinstance(block, gr.Markdown)]


def test_random_weights_are_announced_in_the_page(fake_pipe, config):
    from dataclasses import replace

    from faceclip.demo.app import random_weights_notice
    from faceclip.demo.models import DemoModel

    notice = random_weights_notice(DemoModel("fake"))
    assert notice not in _texts(create_demo(fake_pipe, config))
    assert notice in _texts(create_demo(fake_pipe, replace(config, random_weights=True)))
