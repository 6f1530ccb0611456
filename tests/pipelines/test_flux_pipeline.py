"""FaceT5-FLUX pipeline on tiny components: the same images as stock FluxPipeline, FLUX's call options, defaults."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline

from faceclip.pipelines.flux import FaceT5FluxPipeline
from faceclip.pipelines.flux.family import DEFAULTS, NEGATIVE_PROMPT
from faceclip.pipelines.flux.tiny import build_tiny_components

STEPS = 2
SIZE = {"height": 32, "width": 48}


@pytest.fixture
def pipe() -> FaceT5FluxPipeline:
    pipe = FaceT5FluxPipeline(**build_tiny_components(seed=0))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def face() -> torch.Tensor:
    return torch.rand(1, 3, 28, 28, generator=torch.Generator().manual_seed(0))


def stock_flux(pipe: FaceT5FluxPipeline) -> FluxPipeline:
    """Stock diffusers FluxPipeline sharing the transformer, VAE and scheduler (no text encoders)."""
    stock = FluxPipeline(
        scheduler=pipe.scheduler, vae=pipe.vae, text_encoder=None, tokenizer=None,
        text_encoder_2=None, tokenizer_2=None, transformer=pipe.transformer,
    )  # fmt: skip
    stock.set_progress_bar_config(disable=True)
    return stock


def generate(pipe, seed: int = 0, **kwargs) -> np.ndarray:
    kwargs = {"num_inference_steps": STEPS, "output_type": "np", **SIZE, **kwargs}
    return pipe(generator=torch.Generator().manual_seed(seed), **kwargs).images


def embeddings(pipe, face, prompts: list[str]) -> dict[str, torch.Tensor]:
    embeds, pooled, _ = pipe.encode_prompt(prompts, face_image=face)
    negative, negative_pooled = pipe.encode_negative_prompt([NEGATIVE_PROMPT] * len(prompts))
    return {
        "prompt_embeds": embeds,
        "pooled_prompt_embeds": pooled,
        "negative_prompt_embeds": negative,
        "negative_pooled_prompt_embeds": negative_pooled,
    }


@pytest.mark.parametrize("true_cfg_scale", [1.0, 3.5])
def test_images_are_bit_identical_to_stock_flux_given_the_same_embeddings(pipe, face, true_cfg_scale):
    prompts = ["a person hiking", "a person reading"]
    # Stock FLUX takes embeddings already repeated per image (its encode_prompt repeats only what it encodes).
    conditioning = {k: v.repeat_interleave(2, dim=0) for k, v in embeddings(pipe, face, prompts).items()}
    ours = generate(
        pipe, face_image=face, prompt=prompts, true_cfg_scale=true_cfg_scale, num_images_per_prompt=2
    )
    stock = generate(stock_flux(pipe), **conditioning, true_cfg_scale=true_cfg_scale, guidance_scale=1.0)
    assert ours.shape == (4, 32, 48, 3)
    np.testing.assert_array_equal(ours, stock)


def test_true_cfg_changes_the_image_and_uses_the_cached_zero_face_negative(pipe, face):
    plain = generate(pipe, face_image=face, prompt="a person", true_cfg_scale=1.0)
    assert pipe.negative_cache_info().misses == 0  # no negative pass without true CFG
    guided = generate(pipe, face_image=face, prompt="a person")
    again = generate(pipe, face_image=face, prompt="a person")
    assert pipe.negative_cache_info().hits == 1 and pipe.negative_cache_info().misses == 1
    assert not np.array_equal(plain, guided)
    np.testing.assert_array_equal(guided, again)
    zero_face = pipe.faceclip_encoder(face_images=torch.zeros(1, 3, 28, 28), prompts=[NEGATIVE_PROMPT])
    cached, _ = pipe.encode_negative_prompt([NEGATIVE_PROMPT])
    torch.testing.assert_close(cached, zero_face.prompt_embeds, rtol=0, atol=0)


def test_released_defaults_are_the_call_defaults(pipe):
    import inspect

    params = inspect.signature(FaceT5FluxPipeline.__call__).parameters
    assert params["num_inference_steps"].default == DEFAULTS.num_inference_steps == 50
    assert params["guidance_scale"].default == DEFAULTS.guidance_scale == 1.0
    assert params["true_cfg_scale"].default == DEFAULTS.true_cfg_scale == 3.5
    assert DEFAULTS.size_for(1024) == (1152, 864)
    assert pipe.default_size == DEFAULTS.size_for(pipe.vae.config.sample_size) == (144, 112)
    image = pipe(
        face_image=torch.rand(3, 28, 28), prompt="a person", num_inference_steps=1, true_cfg_scale=1
    ).images[0]
    assert image.size == (112, 144)


def test_encode_prompt_keeps_fluxs_contract(pipe, face):
    embeds, pooled, text_ids = pipe.encode_prompt(["a", "b"], face_image=face, num_images_per_prompt=3)
    length, width = pipe.max_sequence_length, pipe.transformer.config.joint_attention_dim
    assert embeds.shape == (6, length, width) and pooled.shape == (6, 24)
    assert text_ids.shape == (length, 3) and not text_ids.any()
    torch.testing.assert_close(embeds[0], embeds[2])  # prompt-major repeats
    assert not torch.equal(embeds[0], embeds[3])
    again, again_pooled, _ = pipe.encode_prompt(
        None, prompt_embeds=embeds[:1], pooled_prompt_embeds=pooled[:1]
    )
    assert torch.equal(again, embeds[:1]) and torch.equal(again_pooled, pooled[:1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_sequence_length": 256}, "always gives 16 T5 tokens"),
        ({"prompt": "a", "face_image": None}, "face_image: required"),
        ({"prompt": None}, "prompt: required"),
        ({"true_cfg_scale": float("nan")}, "true_cfg_scale must be a finite number"),
        ({"negative_prompt": ["x", "y"]}, "one entry per prompt"),
        ({"num_images_per_prompt": 0}, "num_images_per_prompt"),
        ({"face_image": torch.full((3, 28, 28), 2.0)}, r"lie in \[0, 1\]"),
    ],
)
def test_bad_arguments_are_refused_before_encoding(pipe, face, kwargs, match):
    arguments = {"face_image": face, "prompt": "a person", "num_inference_steps": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        pipe(**arguments)


def test_prompt_2_must_be_the_prompt(pipe, face):
    with pytest.raises(ValueError, match="prompt_2"):
        pipe.encode_prompt("a", prompt_2="b", face_image=face)


def test_sigmas_callbacks_and_output_types_pass_through_to_flux(pipe, face):
    sigmas = [1.0, 0.6, 0.2]
    seen = []

    def on_step(_pipe, step, _timestep, tensors):
        seen.append((step, tuple(tensors)))
        return {"latents": tensors["latents"] * 0}  # a callback can change the latents

    latents = pipe(face_image=face, prompt="a", sigmas=sigmas, num_inference_steps=3, output_type="latent",
                   callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
                   true_cfg_scale=1, **SIZE).images  # fmt: skip
    assert [s for s, _ in seen] == [0, 1, 2] and seen[0][1] == ("latents", "prompt_embeds")
    assert latents.shape == (1, (32 // 16) * (48 // 16), 16) and not latents.any()
    assert pipe.num_timesteps == 3
    tensor = generate(pipe, face_image=face, prompt="a", output_type="pt", true_cfg_scale=1)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (1, 3, 32, 48)


def test_save_and_load_round_trip_generates_the_same_images(pipe, face, tmp_path):
    pipe.save_pretrained(tmp_path / "saved")
    loaded = FaceT5FluxPipeline.from_pretrained(tmp_path / "saved")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.tokenizer_2 is not None and loaded.faceclip_encoder.t5_tokenizer is loaded.tokenizer_2
    np.testing.assert_array_equal(
        generate(pipe, face_image=face, prompt="a"), generate(loaded, face_image=face, prompt="a")
    )


def test_transformer_lora_loads_and_scales(pipe, face, tmp_path):
    from peft import LoraConfig

    base = generate(pipe, face_image=face, prompt="a", true_cfg_scale=1)
    pipe.transformer.add_adapter(LoraConfig(r=2, target_modules=["to_q", "to_k"], init_lora_weights=False))
    FaceT5FluxPipeline.save_lora_weights(tmp_path, transformer_lora_layers=_lora_state(pipe.transformer))
    pipe.transformer.delete_adapters("default")
    pipe.load_lora_weights(tmp_path / "pytorch_lora_weights.safetensors", adapter_name="face")
    with_lora = generate(pipe, face_image=face, prompt="a", true_cfg_scale=1)
    scaled_off = generate(
        pipe, face_image=face, prompt="a", true_cfg_scale=1, joint_attention_kwargs={"scale": 0.0}
    )
    assert not np.array_equal(base, with_lora)
    np.testing.assert_allclose(scaled_off, base, atol=1e-6)


def _lora_state(transformer) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(transformer)


def test_vae_tiling_and_group_offloading_run_on_the_cpu(pipe, face):
    reference = generate(pipe, face_image=face, prompt="a", true_cfg_scale=1)
    pipe.vae.enable_tiling()
    tiled = generate(pipe, face_image=face, prompt="a", true_cfg_scale=1)
    np.testing.assert_allclose(tiled, reference, atol=1e-5)  # the image is smaller than one tile
    pipe.transformer.enable_group_offload(
        onload_device=torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1
    )
    np.testing.assert_allclose(
        generate(pipe, face_image=face, prompt="a", true_cfg_scale=1), reference, atol=1e-6
    )
