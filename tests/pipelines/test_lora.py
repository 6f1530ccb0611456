"""Stage-2 LoRA files load into the pipeline with the training-time rank, alpha and output."""

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from faceclip.pipelines import FaceCLIPStableDiffusionXLPipeline, build_tiny_components

CONFIGS = Path(__file__).parents[2] / "src" / "faceclip" / "training" / "configs"
LORA = ["model.lora.enabled=true", "model.lora.rank=4", "model.lora.alpha=16"]


def _unet_inputs(unet, seed: int = 0) -> dict:
    c, g = unet.config, torch.Generator().manual_seed(seed)
    pooled = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
    return {
        "sample": torch.randn(1, c.in_channels, 8, 8, generator=g),
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(1, 77, c.cross_attention_dim, generator=g),
        "added_cond_kwargs": {
            "text_embeds": torch.randn(1, pooled, generator=g),
            "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]]),
        },
    }


@torch.no_grad()
def _output(unet, inputs: dict) -> torch.Tensor:
    return unet.eval()(**inputs).sample


def _lora_scalings(unet) -> set[float]:
    return {s for m in unet.modules() if hasattr(m, "scaling") for s in m.scaling.values()}


@pytest.fixture
def trained_lora(tmp_path):
    """A stage-2 LoRA UNet with non-zero (as if trained) adapter weights, saved the way training saves it."""
    from faceclip.training.config import load_config
    from faceclip.training.stage2 import Stage2Task

    config = load_config("stage2", CONFIGS / "stage2_tiny.yaml", LORA)
    task = Stage2Task(config)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in task.model.unet.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    task.save_final(tmp_path / "final")
    return task.model.unet, tmp_path / "final" / "lora", config.model.seed


def test_trained_lora_loads_into_the_pipeline_with_its_alpha(trained_lora):
    unet, folder, seed = trained_lora
    inputs = _unet_inputs(unet)
    trained = _output(unet, inputs)
    pipe = FaceCLIPStableDiffusionXLPipeline(**build_tiny_components(seed=seed))
    base = _output(pipe.unet, inputs)
    assert (trained - base).abs().max() > 1e-3  # the adapter changes the output

    assert pipe.load_lora_weights(folder) == "default_0"
    config = pipe.unet.peft_config["default_0"]
    assert (config.r, config.lora_alpha) == (4, 16)
    assert _lora_scalings(pipe.unet) == {4.0}  # alpha / rank, as in training
    torch.testing.assert_close(_output(pipe.unet, inputs), trained, rtol=1e-5, atol=1e-5)

    with safe_open(folder / "pytorch_lora_weights.safetensors", "pt") as f:
        names, header = f.keys(), f.metadata()
    assert all(k.startswith("unet.") for k in names) and "lora_adapter_metadata" in header
    other = FaceCLIPStableDiffusionXLPipeline(**build_tiny_components(seed=seed))
    assert other.load_lora_weights(folder / "pytorch_lora_weights.safetensors", adapter_name="face") == "face"
    torch.testing.assert_close(_output(other.unet, inputs), trained, rtol=1e-5, atol=1e-5)


def test_load_lora_weights_errors_name_the_input(tmp_path, pipe):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        pipe.load_lora_weights(tmp_path / "nowhere")
    save_file({"down_blocks.0.lora.down.weight": torch.zeros(4, 8)}, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match=r"other\.safetensors.*no UNet LoRA"):
        pipe.load_lora_weights(tmp_path / "other.safetensors")


def test_a_two_step_stage2_lora_run_loads_with_the_training_time_output(tmp_path, capsys):
    from faceclip.cli import main
    from faceclip.training.checkpoint import find_checkpoint, load_checkpoint
    from faceclip.training.config import load_config
    from faceclip.training.stage2 import Stage2Task

    sets = [*LORA, "run.progress_bar=false", "run.eval_samples=0", "data.batch_size=2", "optim.lr=0.05"]
    args = ["train", "stage2", "--config", str(CONFIGS / "stage2_tiny.yaml"), "--max-steps", "2"]
    assert main([*args, "--out", str(tmp_path), "--set", *sets]) == 0
    capsys.readouterr()
    # The training-time model: the same config with the run's trained adapter weights from its checkpoint.
    task = Stage2Task(load_config("stage2", tmp_path / "final" / "config.yaml"))
    task.load_trainable_state(load_checkpoint(find_checkpoint(tmp_path)).model)
    inputs = _unet_inputs(task.model.unet)
    trained = _output(task.model.unet, inputs)

    pipe = FaceCLIPStableDiffusionXLPipeline(**build_tiny_components(seed=task.config.model.seed))
    assert (trained - _output(pipe.unet, inputs)).abs().max() > 1e-4  # training changed the output
    pipe.load_lora_weights(tmp_path / "final" / "lora")
    assert _lora_scalings(pipe.unet) == {4.0}
    torch.testing.assert_close(_output(pipe.unet, inputs), trained, rtol=1e-5, atol=1e-5)
