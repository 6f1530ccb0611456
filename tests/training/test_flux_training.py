"""FaceT5-FLUX stage 2: the config picks the FLUX task, the loss falls, resume is exact, and the LoRA it saves
loads into FaceT5FluxPipeline and stock diffusers FluxPipeline."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from faceclip.cli import main
from faceclip.training.config import (
    FAMILY_STAGES,
    ConfigError,
    FluxStage2Config,
    Stage2Config,
    load_config,
)
from faceclip.training.task import missing_members

CONFIGS = Path(__file__).parents[2] / "src" / "faceclip" / "training" / "configs"
FLUX_TINY = CONFIGS / "stage2_flux_tiny.yaml"
QUIET = ["run.progress_bar=false", "run.eval_samples=0"]


@pytest.fixture(scope="module")
def flux_task():
    from faceclip.training.stage2_flux import FluxStage2Task

    return FluxStage2Task(load_config("stage2", FLUX_TINY, ["model.train_encoder=true"]))


def test_the_family_key_picks_the_flux_config_and_sdxl_configs_stay_sdxl():
    from faceclip.cli.train import TASKS

    assert isinstance(load_config("stage2", FLUX_TINY), FluxStage2Config)
    sdxl = load_config("stage2", CONFIGS / "stage2_tiny.yaml")
    assert type(sdxl) is Stage2Config and not hasattr(sdxl, "family")
    assert type(load_config("stage2", None, ["family=faceclip-sdxl"])) is Stage2Config
    assert {cls.__name__ for cls in FAMILY_STAGES.values()} == set(TASKS)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("family=flux-xl", "config key 'family' must be one of faceclip-sdxl, facet5-flux, got 'flux-xl'"),
        ("data.image_size=40", "config key 'data.image_size' must be a multiple of 16"),
        (
            "model.weighting_scheme=uniform",
            "config key 'model.weighting_scheme' must be one of none, logit_normal",
        ),
        ("model.condition_dropout=1.0", "config key 'model.condition_dropout' must be in [0, 1)"),
    ],
)
def test_bad_flux_config_values_are_refused_by_name(override, message):
    with pytest.raises(
        ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        load_config("stage2", FLUX_TINY, [override])


def test_an_unknown_family_on_the_command_line_exits_2_naming_it_before_writing(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "stage2", "--config", str(FLUX_TINY), "--out", str(out), "--set", "family=flux-xl"])
    err = capsys.readouterr().err
    assert code == 2 and "faceclip train: error: config key 'family' must be one of" in err
    assert "Traceback" not in err and not out.exists()


def test_stage2_starts_from_a_stage1_encoder_folder(tmp_path):
    """``model.encoder: runs/s1/final/encoder`` (saved without a tokenizer) gets the pipeline's T5 tokenizer."""
    from faceclip.training.stage1_facet5 import FaceT5Stage1Task
    from faceclip.training.stage2_flux import FluxStage2Task

    stage1 = FaceT5Stage1Task(load_config("stage1", CONFIGS / "stage1_facet5_tiny.yaml"))
    with torch.no_grad():
        stage1.model.encoder.face_patch_proj.bias.fill_(0.25)
    stage1.save_final(tmp_path)
    task = FluxStage2Task(load_config("stage2", FLUX_TINY, [f"model.encoder={tmp_path / 'encoder'}"]))
    encoder = task.model.encoder
    assert encoder.t5_tokenizer is not None and bool((encoder.face_patch_proj.bias == 0.25).all())


def test_a_flux_config_saved_with_a_run_loads_back_as_flux(tmp_path):
    from faceclip.training.config import save_config

    config = load_config("stage2", FLUX_TINY, ["model.guidance=2.5"])
    save_config(config, tmp_path / "config.yaml", "stage2")
    again = load_config("stage2", tmp_path / "config.yaml")
    assert isinstance(again, FluxStage2Config) and again == config


def test_the_flux_task_trains_lora_and_the_encoder_parts_only(flux_task):
    assert missing_members(flux_task) == []
    names = list(flux_task.trainable_state())
    assert names and all(
        "lora_" in n or n.startswith(("encoder.face_patch_proj", "encoder.fuser")) for n in names
    )
    assert any(n.startswith("encoder.fuser") for n in names) and any(
        "single_transformer_blocks" in n for n in names
    )


def _row(batch: dict, i: int) -> dict:
    """Sample ``i`` of a collated batch as a batch of one."""
    return {k: v[i : i + 1] for k, v in batch.items() if isinstance(v, torch.Tensor | list)}


def test_the_flux_loss_depends_only_on_each_samples_stream_position(flux_task):
    """The per-sample noise, timestep and dropout key on ``position``: a sample's loss is the same alone or in a
    batch (what makes one process and two give the same result)."""
    from faceclip.training.data import eval_batch

    batch = dict(eval_batch(flux_task.config.data, 4), position=torch.tensor([5, 6, 7, 8]))
    model = flux_task.model.eval()
    with torch.no_grad():
        together = model(batch).loss
        alone = [model(_row(batch, i)).loss for i in range(4)]
        shifted = model(dict(batch, position=batch["position"] + 100)).loss
    torch.testing.assert_close(together, torch.stack(alone).mean(), rtol=1e-5, atol=1e-6)
    assert torch.isfinite(together) and not torch.equal(together, shifted)


def _perturb_lora(task, seed: int = 1) -> None:
    """Give the LoRA up-projections (zero at the start) values, as training does."""
    with torch.no_grad():
        for name, p in task.model.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed))


def _tiny_pipelines():
    from diffusers import FluxPipeline

    from faceclip.pipelines.flux.pipeline_facet5_flux import FaceT5FluxPipeline
    from faceclip.pipelines.flux.tiny import build_tiny_components

    ours = FaceT5FluxPipeline(**build_tiny_components())
    parts = build_tiny_components()
    stock = FluxPipeline(scheduler=parts["scheduler"], vae=parts["vae"], transformer=parts["transformer"],
                         text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)  # fmt: skip
    return ours, stock


FACE = torch.rand(3, 28, 28, generator=torch.Generator().manual_seed(0))
SIZE = dict(height=32, width=32, num_inference_steps=2, output_type="np")


def _ours(pipe):
    return pipe(face_image=FACE, prompt="a photo of a person", true_cfg_scale=1.0,
                generator=torch.Generator().manual_seed(0), **SIZE).images  # fmt: skip


def _stock(pipe, embeds):
    return pipe(prompt_embeds=embeds[0], pooled_prompt_embeds=embeds[1], guidance_scale=1.0,
                generator=torch.Generator().manual_seed(0), **SIZE).images  # fmt: skip


def test_the_saved_lora_loads_into_our_pipeline_and_stock_flux_and_changes_the_images(flux_task, tmp_path):
    from faceclip.training.stage2 import LORA_WEIGHT_NAME

    _perturb_lora(flux_task)
    flux_task.save_final(tmp_path)
    assert (tmp_path / "lora" / LORA_WEIGHT_NAME).is_file() and (tmp_path / "faceclip_encoder").is_dir()
    assert all(k.startswith("transformer.") for k in load_file(tmp_path / "lora" / LORA_WEIGHT_NAME))
    ours, stock = _tiny_pipelines()
    embeds = ours.encode_prompt("a photo of a person", face_image=FACE)[:2]
    base_ours, base_stock = _ours(ours), _stock(stock, embeds)
    assert (base_ours == base_stock).all()  # same components, same embeddings: the same denoising
    ours.load_lora_weights(tmp_path / "lora")
    stock.load_lora_weights(tmp_path / "lora")
    lora_ours, lora_stock = _ours(ours), _stock(stock, embeds)
    assert abs(lora_ours - base_ours).max() > 1e-3
    assert (lora_ours == lora_stock).all()
    again, _ = _tiny_pipelines()
    again.load_lora_weights(tmp_path / "lora")
    assert (_ours(again) == lora_ours).all()  # loading it back: bit-identical images


@pytest.mark.slow
def test_flux_loss_falls_on_the_tiny_transformer(tmp_path, capsys):
    """Full fine-tune and LoRA, through the real command; the held-out loss (fixed noise) falls."""
    for mode, factor in (("false", 0.85), ("true", 0.95)):
        out = tmp_path / mode
        args = ["train", "stage2", "--config", str(FLUX_TINY), "--max-steps", "20", "--out", str(out), "--set",
                "run.progress_bar=false", f"model.lora.enabled={mode}"]  # fmt: skip
        if mode == "false":
            args.append("optim.lr=1e-3")
        assert main(args) == 0
        m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert m["eval_end/loss"] < factor * m["eval_start/loss"], (mode, m)
    assert (tmp_path / "false" / "final" / "transformer" / "config.json").is_file()
    assert (tmp_path / "true" / "final" / "lora" / "pytorch_lora_weights.safetensors").is_file()


@pytest.mark.slow
def test_flux_stage2_resumes_exactly_after_sigterm(tmp_path):
    """3 steps straight == 2 steps, SIGTERM (checkpoint, stop), resume, 1 step: LoRA, the trained encoder parts
    and the EMA, bit for bit."""
    import os
    import signal

    from faceclip.training.loop import fit
    from faceclip.training.stage2_flux import FluxStage2Task

    class StoppedAfterOneStep(FluxStage2Task):
        def after_step(self) -> None:
            super().after_step()
            os.kill(os.getpid(), signal.SIGTERM)  # seen at the end of the next step: checkpoint, stop

    sets = [*QUIET, "data.batch_size=2", "run.checkpoint_every=100", "model.train_encoder=true",
            "model.ema.enabled=true", "model.ema.decay=0.5", "model.cache_latents=true"]  # fmt: skip

    def run(task_class, out, resume=None):
        config = load_config("stage2", FLUX_TINY, [*sets, "run.max_steps=3"])
        config.run.output_dir = str(out)
        metrics = fit(task_class(config), config, resume=resume)
        folder = out / "checkpoints" / f"step-{metrics['steps']:06d}"
        return metrics, load_file(folder / "model.safetensors"), load_file(folder / "ema.safetensors")

    straight = run(FluxStage2Task, tmp_path / "straight")
    stopped = run(StoppedAfterOneStep, tmp_path / "split")
    resumed = run(FluxStage2Task, tmp_path / "split", resume=tmp_path / "split")
    assert stopped[0]["stopped_by_signal"] and stopped[0]["steps"] == 2 and resumed[0]["steps"] == 3
    for whole, split in zip(straight[1:], resumed[1:]):
        assert whole.keys() == split.keys() and any(k.startswith("encoder.fuser") for k in whole)
        assert all(torch.equal(whole[k], split[k]) for k in whole)
    assert any(not torch.equal(straight[1][k], stopped[1][k]) for k in straight[1])
