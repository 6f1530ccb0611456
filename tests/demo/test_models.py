"""The demo's model choice without a browser: the pool (lazy loads, one model on the device, failed loads),
per-family form defaults and settings, true CFG reaching the pipeline, the family in the saved PNGs."""

from __future__ import annotations

import gc
import weakref
from dataclasses import replace

import pytest
import torch

from conftest import FakePipeline
from faceclip.demo import handlers
from faceclip.demo.app import default_settings
from faceclip.demo.handlers import DemoError, FormValues
from faceclip.demo.models import DemoModel, ModelPool
from faceclip.outputs import read_png_metadata
from faceclip.pipelines.flux.family import DEFAULTS as FLUX_DEFAULTS
from faceclip.pipelines.sdxl.family import DEFAULTS as SDXL_DEFAULTS

MODELS = (DemoModel("sdxl", "FaceCLIP-SDXL"), DemoModel("flux", "FaceT5-FLUX"), DemoModel("broken"))


class Loader:
    """Loads fake pipelines by name, recording each load; ``"broken"`` fails with ``error``."""

    def __init__(self, error: Exception | None = None):
        self.loaded: list[str] = []
        self.error = error or FileNotFoundError("--model broken: no such folder.\nPass an existing folder.")

    def __call__(self, name: str) -> FakePipeline:
        self.loaded.append(name)
        if name == "broken":
            raise self.error
        pipe = FakePipeline(defaults=FLUX_DEFAULTS if name == "flux" else SDXL_DEFAULTS)
        return pipe.to("meta")  # "on its device": any device but the CPU, to see the moves


def test_only_the_first_model_loads_at_start_and_others_when_chosen():
    loader = Loader()
    pool = ModelPool(MODELS, loader)
    assert loader.loaded == ["sdxl"] and pool.current_name == "sdxl"
    flux = pool.select("flux")
    assert loader.loaded == ["sdxl", "flux"] and pool.current is flux
    assert flux.generation_defaults is FLUX_DEFAULTS
    assert pool.select("flux") is flux and loader.loaded == ["sdxl", "flux"]  # chosen again: no reload


def test_the_previous_model_leaves_the_device_before_the_next_loads_and_is_then_dropped():
    loader = Loader()
    first = loader("sdxl")
    moves, seen_while_loading = first.moves, []  # the list of moves outlives the pipeline
    pool = ModelPool(MODELS, lambda name: seen_while_loading.append(list(moves)) or loader(name), first=first)
    gone = weakref.ref(first)
    del first
    pool.select("flux")
    assert seen_while_loading == [["meta", "cpu"]]  # on the CPU while the next one loads
    gc.collect()
    assert gone() is None  # then dropped: kept in no memory by default


def test_keep_unused_on_cpu_switches_back_without_loading():
    loader = Loader()
    pool = ModelPool(MODELS, loader, keep_unused_on_cpu=True)
    sdxl = pool.current
    pool.select("flux")
    assert pool.select("sdxl") is sdxl and loader.loaded == ["sdxl", "flux"]
    assert sdxl.moves == ["meta", "cpu", "meta"]  # parked on the CPU, then back on its device


def test_a_failed_load_is_a_message_and_the_previous_model_stays_in_use():
    loader = Loader()
    pool = ModelPool(MODELS, loader)
    sdxl = pool.current
    with pytest.raises(DemoError) as info:
        pool.select("broken")
    assert str(info.value) == (
        "Cannot load broken: --model broken: no such folder. The page still uses sdxl (FaceCLIP-SDXL)."
    )
    assert pool.current is sdxl and pool.current_name == "sdxl"
    assert sdxl.moves[-2:] == ["cpu", "meta"]  # moved back to its device
    assert pool.select("flux").generation_defaults is FLUX_DEFAULTS  # the pool still works


def test_an_unexpected_load_failure_keeps_its_details_in_the_log(caplog):
    pool = ModelPool(MODELS, Loader(RuntimeError("CUDA error: an illegal memory access at 0x7f3a")))
    with pytest.raises(DemoError, match=r"^Cannot load broken; the details are in the server log\.") as info:
        pool.select("broken")
    assert "0x7f3a" not in str(info.value) and "0x7f3a" in caplog.text


def test_unknown_and_repeated_models_are_refused():
    pool = ModelPool(MODELS, Loader())
    with pytest.raises(DemoError, match="Unknown model 'sd3'; choose one of: sdxl, flux, broken"):
        pool.select("sd3")
    with pytest.raises(ValueError, match="each name must appear once"):
        ModelPool([MODELS[0], MODELS[0]], Loader())


def test_menu_entries_follow_the_resolved_model():
    from faceclip.registry import resolve_model

    tiny = DemoModel.from_source("tiny-random-flux", resolve_model("tiny-random-flux"))
    assert tiny.label == "tiny-random-flux (FaceT5-FLUX)"
    assert tiny.random_weights and tiny.license_notice == ""
    released = DemoModel.from_source(
        "ByteDance/FaceCLIP", resolve_model("ByteDance/FaceCLIP", family="facet5-flux")
    )
    assert not released.random_weights and "FLUX.1 [dev] Non-Commercial License" in released.license_notice
    sdxl = DemoModel.from_source("ByteDance/FaceCLIP", resolve_model("ByteDance/FaceCLIP"))
    assert "CC-BY-NC-4.0" in sdxl.license_notice and "FLUX" not in sdxl.license_notice


def test_the_form_starts_from_each_familys_defaults(tiny_pipes):
    flux = default_settings(tiny_pipes["tiny-random-flux"])
    assert (flux.steps, flux.guidance_scale, flux.true_cfg_scale) == (50, 1.0, 3.5)
    assert flux.negative_prompt == FLUX_DEFAULTS.negative_prompt
    assert (flux.height, flux.width) == tiny_pipes["tiny-random-flux"].default_size == (144, 112)
    sdxl = default_settings(tiny_pipes["tiny-random"])
    assert (sdxl.steps, sdxl.guidance_scale, sdxl.true_cfg_scale) == (50, 5.0, None)
    assert sdxl.negative_prompt == SDXL_DEFAULTS.negative_prompt
    assert (sdxl.height, sdxl.width) == tiny_pipes["tiny-random"].default_size == (72, 56)


def test_the_sizes_offered_fit_every_family():
    from faceclip.registry import FAMILIES

    for family in FAMILIES:
        step = family.defaults.size_multiple
        assert all(w % step == 0 and h % step == 0 for w, h in handlers.SIZES.values()), family.name
    labels, label = handlers.size_choices(112, 144)
    assert label == "Custom 112×144" and labels == [*handlers.SIZES, label]
    assert handlers.size_choices(864, 1152) == (list(handlers.SIZES), "Portrait 864×1152")


def test_settings_follow_the_family_grid_and_true_cfg():
    form = FormValues("a photo", steps=2, width=64, height=64, true_cfg_scale=2.5)
    flux, sdxl = FakePipeline(defaults=FLUX_DEFAULTS), FakePipeline()
    assert handlers.settings_for(flux, form).true_cfg_scale == 2.5
    assert handlers.settings_for(sdxl, form).true_cfg_scale is None  # SDXL: the hidden slider is ignored
    assert handlers.settings_for(sdxl, replace(form, width=72)).width == 72
    with pytest.raises(
        DemoError, match="width must be a multiple of 16 from 64 to 2048 for this model; got 72"
    ):
        handlers.settings_for(flux, replace(form, width=72))
    with pytest.raises(DemoError, match="true CFG scale must be between 0 and 30; got 31"):
        handlers.settings_for(flux, replace(form, true_cfg_scale=31))


def test_true_cfg_reaches_the_pipeline(tmp_path):
    flux = FakePipeline(defaults=FLUX_DEFAULTS)
    settings = handlers.settings_for(flux, FormValues("a photo", num_images=1, steps=2, true_cfg_scale=2.5))
    [path] = handlers.generate_images(flux, flux.prepare_face(None), settings, tmp_path, model_name="flux")
    assert flux.calls[0]["true_cfg_scale"] == 2.5 and flux.calls[0]["guidance_scale"] == 5.0
    assert read_png_metadata(path)["true_cfg"] == 2.5
    sdxl = FakePipeline()
    settings = handlers.settings_for(sdxl, FormValues("a photo", num_images=1, steps=2, true_cfg_scale=2.5))
    list(handlers.generate_images(sdxl, sdxl.prepare_face(None), settings, tmp_path))
    assert "true_cfg_scale" not in sdxl.calls[0]


@pytest.mark.slow  # two tiny models generate on the CPU (about 4 s)
@pytest.mark.parametrize(
    ("name", "family", "true_cfg"),
    [("tiny-random", "faceclip-sdxl", None), ("tiny-random-flux", "facet5-flux", 2.5)],
)
def test_saved_pngs_record_the_family_and_true_cfg(tiny_pipes, tmp_path, monkeypatch, name, family, true_cfg):
    pipe = tiny_pipes[name]
    calls = []
    real_call = type(pipe).__call__
    monkeypatch.setattr(
        type(pipe), "__call__", lambda self, **kwargs: calls.append(kwargs) or real_call(self, **kwargs)
    )
    form = replace(default_settings(pipe), num_images=1, steps=2, width=64, height=64, true_cfg_scale=2.5)
    face = handlers.FaceReference(pipe.prepare_face(torch.full((1, 3, 448, 448), 0.5)))
    [path] = handlers.generate_images(
        pipe, face, handlers.settings_for(pipe, form), tmp_path, model_name=name
    )
    meta = read_png_metadata(path)
    assert (meta["model"], meta["family"], meta.get("true_cfg")) == (name, family, true_cfg)
    assert calls[0].get("true_cfg_scale") == true_cfg and calls[0]["num_inference_steps"] == 2
