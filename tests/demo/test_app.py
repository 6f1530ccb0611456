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


def _block(demo, elem_id):
    return next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == elem_id)


@pytest.fixture
def two_models():
    """A pool of a fake FaceCLIP-SDXL (random weights) and a fake FaceT5-FLUX with released weights; a third
    model fails to load. Loads are recorded."""
    from faceclip.demo.models import DemoModel, ModelPool
    from faceclip.pipelines.flux.family import DEFAULTS, LICENSE_NOTICE

    loaded = []

    def load(name):
        loaded.append(name)
        if name == "broken":
            raise FileNotFoundError("--model broken: no such folder.")
        return FakePipeline(defaults=DEFAULTS) if name == "flux" else FakePipeline()

    models = [DemoModel("sdxl", "FaceCLIP-SDXL", random_weights=True), DemoModel("flux", "FaceT5-FLUX",
              license_notice=LICENSE_NOTICE), DemoModel("broken", "FaceT5-FLUX")]  # fmt: skip
    return ModelPool(models, load), loaded


def test_one_model_shows_no_menu_and_sdxl_has_no_true_cfg(fake_pipe, config):
    demo = create_demo(fake_pipe, config)
    assert _block(demo, "model").visible is False
    assert _block(demo, "true-cfg").visible is False
    assert _block(demo, "guidance").label == "Guidance scale"


def test_the_menu_lists_the_models_with_their_family(two_models, config):
    pool, loaded = two_models
    demo = create_demo(pool, config)
    menu = _block(demo, "model")
    assert menu.visible is True and menu.value == "sdxl"
    assert [tuple(choice) for choice in menu.choices] == [
        ("sdxl (FaceCLIP-SDXL)", "sdxl"), ("flux (FaceT5-FLUX)", "flux"), ("broken (FaceT5-FLUX)", "broken")
    ]  # fmt: skip
    assert loaded == ["sdxl"]  # the others load when chosen
    assert "random weights" in _block(demo, "random-weights").value
    assert _block(demo, "licence").visible is False
    texts = _texts(demo)
    assert (
        sum("Model: `" in text for text in texts) == 1
        and sum("random weights" in text for text in texts) == 1
    )


def test_choosing_flux_fills_its_defaults_and_notices(two_models, config):
    from faceclip.pipelines.flux.family import DEFAULTS, LICENSE_NOTICE

    pool, loaded = two_models
    on_model = _event(create_demo(pool, config), "on_model").fn
    menu, session, info, random_notice, licence, negative, steps, guidance, true_cfg, size = on_model(
        "flux", "sdxl"
    )
    assert (menu, session, loaded) == ("flux", "flux", ["sdxl", "flux"])
    assert info.value == "Model: `flux` (FaceT5-FLUX)"
    assert random_notice.visible is False and licence.visible is True and LICENSE_NOTICE in licence.value
    assert negative.value == DEFAULTS.negative_prompt and steps.value == DEFAULTS.num_inference_steps
    assert guidance.value == DEFAULTS.guidance_scale and guidance.label == "Distilled guidance"
    assert true_cfg.visible is True and true_cfg.value == DEFAULTS.true_cfg_scale
    assert size.value == "Custom 64×64" and "Portrait 864×1152" in [c[0] for c in size.choices]
    # Back to the first model: the form it started with, no true CFG.
    *_, negative, steps, guidance, true_cfg, _ = on_model("sdxl", "flux")
    assert steps.value == config.defaults.steps and guidance.label == "Guidance scale"
    assert true_cfg.visible is False


def test_a_model_that_fails_to_load_is_a_message_and_the_page_keeps_working(two_models, config, photo_path):
    pool, _ = two_models
    demo = create_demo(pool, config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gr.Warning outside a request only warns
        menu, session, info, *rest = _event(demo, "on_model").fn("broken", "sdxl")
    assert (menu, session) == ("sdxl", "sdxl")  # the menu shows the model still in use
    assert info == (
        "**Model not changed.** Cannot load broken (FaceT5-FLUX): --model broken: no such folder. "
        "The page still uses sdxl (FaceCLIP-SDXL)."
    )
    assert all(isinstance(update, type(gr.skip())) for update in rest)
    face = _event(demo, "on_photo").fn({"path": str(photo_path)})[0]
    args = (face, "sdxl", "a photo", "", 1, 2, 5.0, 1.0, 3, "Custom 64×64")
    [(_, files)] = list(_event(demo, "on_generate").fn(*args, progress=_no_progress))
    assert read_png_metadata(files[0])["model"] == "sdxl" and pool.current.calls


def test_generate_uses_the_sessions_model_and_its_true_cfg(two_models, config, photo_path):
    pool, loaded = two_models
    demo = create_demo(pool, config)
    face = _event(demo, "on_photo").fn({"path": str(photo_path)})[0]
    on_generate = _event(demo, "on_generate").fn
    list(on_generate(face, "flux", "a photo", "", 1, 2, 1.0, 2.5, 3, "Custom 64×64", progress=_no_progress))
    flux = pool.current
    assert loaded == ["sdxl", "flux"] and flux.calls[0]["true_cfg_scale"] == 2.5
    # Another session still on SDXL: its request switches back, and its hidden True CFG slider is ignored.
    [(_, files)] = list(
        on_generate(face, "sdxl", "a photo", "", 1, 2, 5.0, 2.5, 3, "Custom 64×64", progress=_no_progress)
    )
    assert pool.current_name == "sdxl" and "true_cfg_scale" not in pool.current.calls[0]
    assert read_png_metadata(files[0])["model"] == "sdxl" and flux.moves[-1] == "cpu"


def test_flux_sizes_off_its_grid_are_refused_in_words(two_models, config, photo_path):
    pool, _ = two_models
    demo = create_demo(pool, config)
    face = _event(demo, "on_photo").fn({"path": str(photo_path)})[0]
    args = (face, "flux", "a photo", "", 1, 2, 1.0, 3.5, 3, "Custom 72×72")
    with pytest.warns(UserWarning, match="width must be a multiple of 16"):
        updates = list(_event(demo, "on_generate").fn(*args, progress=_no_progress))
    assert len(updates) == 1 and pool.current.calls == []


def test_a_bad_setting_is_refused_before_another_model_loads(two_models, config, photo_path):
    pool, loaded = two_models
    demo = create_demo(pool, config)
    face = _event(demo, "on_photo").fn({"path": str(photo_path)})[0]
    args = (face, "flux", "   ", "", 1, 2, 1.0, 3.5, 3, "Custom 64×64")
    with pytest.warns(UserWarning, match="Type a prompt first"):
        list(_event(demo, "on_generate").fn(*args, progress=_no_progress))
    assert loaded == ["sdxl"]
