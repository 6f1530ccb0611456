"""FaceCLIP-SDXL pipeline on tiny random components: parity with stock SDXL, batching, caching, inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from PIL import Image

from faceclip.pipelines import PreparedFace
from faceclip.pipelines.sdxl.family import NEGATIVE_PROMPT as DEFAULT_NEGATIVE_PROMPT


def call_kwargs(**overrides) -> dict:
    """Small, fast generation settings: 2 steps at 64 x 64, numpy output."""
    return {"num_inference_steps": 2, "height": 64, "width": 64, "output_type": "np"} | overrides


def seeded(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def count_calls(module: torch.nn.Module) -> list[int]:
    """Batch size of every forward call of ``module`` (appended as it runs)."""
    sizes: list[int] = []

    def hook(_module, args, kwargs):
        faces = kwargs.get("face_images", args[0] if args else None)
        sizes.append(0 if faces is None else faces.shape[0])

    module.register_forward_pre_hook(hook, with_kwargs=True)
    return sizes


def test_matches_stock_sdxl_given_the_same_embeddings(pipe, face):
    prepared = pipe.prepare_face(face)
    embeds, _, pooled, _ = pipe.encode_prompt(
        ["a person on a beach"], prepared, do_classifier_free_guidance=False
    )
    negative, negative_pooled = pipe.encode_negative_prompt([DEFAULT_NEGATIVE_PROMPT])
    stock = StableDiffusionXLPipeline(
        vae=pipe.vae,
        text_encoder=None,
        text_encoder_2=None,
        tokenizer=None,
        tokenizer_2=None,
        unet=pipe.unet,
        scheduler=pipe.scheduler,
        add_watermarker=False,
    )
    stock.set_progress_bar_config(disable=True)
    expected = stock(
        prompt_embeds=embeds,
        pooled_prompt_embeds=pooled,
        negative_prompt_embeds=negative,
        negative_pooled_prompt_embeds=negative_pooled,
        generator=seeded(0)[0],
        **call_kwargs(height=1152 // 18, width=864 // 18 // 8 * 8),
    ).images
    out = pipe(
        face_image=face,
        prompt="a person on a beach",
        generator=seeded(0)[0],
        **call_kwargs(height=1152 // 18, width=864 // 18 // 8 * 8),
    )
    assert out.images.shape == expected.shape == (1, 64, 48, 3)
    assert np.abs(out.images - expected).max() < 1e-6
    assert out.images.std() > 0.01  # not a blank image


def test_pil_output_and_defaults(pipe, face):
    out = pipe(face_image=face, prompt="x", num_inference_steps=1, height=64, width=48)
    assert len(out.images) == 1 and isinstance(out.images[0], Image.Image)
    assert out.images[0].size == (48, 64)  # PIL size is (width, height)
    assert isinstance(out.face, PreparedFace)


def test_batch_of_prompts_equals_one_by_one(pipe, face):
    prompts = ["a person in a garden", "a person on the moon"]
    batch = pipe(face_image=face, prompt=prompts, generator=seeded(1, 2), **call_kwargs()).images
    single = [
        pipe(face_image=face, prompt=p, generator=seeded(s), **call_kwargs()).images
        for p, s in zip(prompts, (1, 2))
    ]
    assert batch.shape[0] == 2
    np.testing.assert_allclose(batch, np.concatenate(single), atol=1e-4)
    assert np.abs(batch[0] - batch[1]).max() > 1e-3  # different prompts, different images


def test_num_images_per_prompt_is_prompt_major(pipe, face):
    out = pipe(
        face_image=face,
        prompt=["a", "b"],
        num_images_per_prompt=2,
        generator=seeded(0, 1, 2, 3),
        **call_kwargs(),
    )
    assert out.images.shape[0] == 4
    again = pipe(
        face_image=face, prompt="b", num_images_per_prompt=2, generator=seeded(2, 3), **call_kwargs()
    )
    np.testing.assert_allclose(out.images[2:], again.images, atol=1e-4)


def test_face_is_encoded_once_for_all_prompts_and_images(pipe, face):
    encoder_calls = count_calls(pipe.faceclip_encoder)
    vit_calls: list[int] = []
    pipe.faceclip_encoder.branch_l.face_encoder.register_forward_pre_hook(
        lambda _m, args: vit_calls.append(args[0].shape[0])
    )
    pipe(face_image=face, prompt=["a", "b", "c"], num_images_per_prompt=2, **call_kwargs())
    assert encoder_calls == [3, 0]  # one call for the 3 prompts, one for the (black-face) negative
    assert vit_calls == [1, 1]  # the face ViT saw the face once, and the black face once


def test_negative_embeddings_are_cached(pipe, face):
    encoder_calls = count_calls(pipe.faceclip_encoder)
    pipe(face_image=face, prompt="a", **call_kwargs())
    assert pipe.negative_cache_info().misses == 1 and pipe.negative_cache_info().hits == 0
    pipe(face_image=face, prompt=["b", "c"], num_images_per_prompt=2, **call_kwargs())
    info = pipe.negative_cache_info()
    assert (info.hits, info.misses, info.size) == (1, 1, 1)
    assert len(encoder_calls) == 3  # prompt, negative, prompt: the second negative came from the cache
    pipe(face_image=face, prompt="d", negative_prompt="blurry", **call_kwargs())
    assert pipe.negative_cache_info().misses == 2


def test_cached_negative_equals_fresh_batch(pipe):
    cached, cached_pooled = pipe.encode_negative_prompt(["blurry"] * 3)
    fresh = pipe.faceclip_encoder(
        face_images=None, prompts=["blurry"] * 3, has_face=torch.zeros(3, dtype=torch.bool)
    )
    torch.testing.assert_close(cached, fresh.prompt_embeds, atol=1e-5, rtol=0)
    torch.testing.assert_close(cached_pooled, fresh.pooled_prompt_embeds, atol=1e-5, rtol=0)


def test_negative_prompt_list_per_prompt(pipe, face):
    out = pipe(
        face_image=face,
        prompt=["a", "b"],
        negative_prompt=["x", "y"],
        generator=seeded(0, 1),
        **call_kwargs(),
    )
    assert out.images.shape[0] == 2
    assert pipe.negative_cache_info().size == 2


def test_no_guidance_skips_the_negative_path(pipe, face):
    pipe(face_image=face, prompt="a", guidance_scale=1.0, **call_kwargs())
    assert pipe.negative_cache_info().misses == 0


def test_photo_input_is_detected_and_aligned(pipe, face_photo):
    prepared = pipe.prepare_face(str(face_photo))
    assert prepared.tensor.shape == (1, 3, 448, 448)
    assert float(prepared.tensor.min()) >= 0.0 and float(prepared.tensor.max()) <= 1.0
    assert prepared.image.size == (448, 448) and prepared.detection is not None
    out = pipe(face_image=Image.open(face_photo), prompt="a", **call_kwargs(num_inference_steps=1))
    assert out.face.tensor.shape == (1, 3, 448, 448)


def test_no_face_found(pipe):
    from faceclip.face import NoFaceFoundError

    with pytest.raises(NoFaceFoundError):
        pipe(face_image=Image.new("RGB", (96, 96), (128, 128, 128)), prompt="a", **call_kwargs())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"height": 60}, "multiples of 8"),
        ({"prompt": None}, "prompt"),
        ({"prompt": []}, "non-empty list"),
        ({"face_image": None}, "face_image"),
        ({"face_image": torch.rand(2, 3, 8, 8)}, "one face"),
        ({"face_image": torch.rand(1, 3, 8, 8) * 255}, r"\[0, 1\]"),
        ({"negative_prompt": ["x", "y"]}, "one entry per prompt"),
        ({"num_images_per_prompt": 0}, "num_images_per_prompt"),
    ],
)
def test_bad_inputs_name_the_argument(pipe, face, kwargs, message):
    arguments = {"face_image": face, "prompt": "a", **call_kwargs()} | kwargs
    with pytest.raises(ValueError, match=message):
        pipe(**arguments)


def test_step_callback_and_latent_output(pipe, face):
    steps = []

    def on_step(_pipe, step, _timestep, tensors):
        steps.append(step)
        return tensors

    out = pipe(face_image=face, prompt="a", callback_on_step_end=on_step, **call_kwargs(output_type="latent"))
    assert steps == [0, 1]
    assert out.images.shape == (1, 4, 32, 32)  # the tiny VAE downsamples by 2


def test_vae_slicing_and_tiling(pipe, face):
    reference = pipe(
        face_image=face, prompt="a", num_images_per_prompt=2, generator=seeded(0, 1), **call_kwargs()
    )
    pipe.vae.enable_slicing()
    sliced = pipe(
        face_image=face, prompt="a", num_images_per_prompt=2, generator=seeded(0, 1), **call_kwargs()
    )
    np.testing.assert_allclose(sliced.images, reference.images, atol=1e-5)
    pipe.vae.enable_tiling()  # the tiny VAE tiles latents larger than 32 x 32
    tiled_calls = []
    tiled_decode = pipe.vae.tiled_decode
    pipe.vae.tiled_decode = lambda *args, **kwargs: tiled_calls.append(1) or tiled_decode(*args, **kwargs)
    tiled = pipe(face_image=face, prompt="a", **call_kwargs(height=96, width=96))
    assert tiled_calls and np.isfinite(tiled.images).all() and tiled.images.shape == (1, 96, 96, 3)


def test_fp16_vae_is_upcast_for_decoding(pipe, face):
    pipe.vae.to(torch.float16)
    out = pipe(face_image=face, prompt="a", **call_kwargs(num_inference_steps=1))
    assert np.isfinite(out.images).all()
    assert pipe.vae.dtype == torch.float16  # decoded in fp32, then cast back


@pytest.mark.slow
def test_bf16_on_cpu(pipe, face):
    reference = pipe(face_image=face, prompt="a", generator=seeded(0), **call_kwargs())
    pipe.to(dtype=torch.bfloat16)
    out = pipe(face_image=face, prompt="a", generator=seeded(0), **call_kwargs())
    assert np.isfinite(out.images).all()
    assert np.abs(out.images - reference.images).mean() < 0.05


def test_accepts_precomputed_embeddings(pipe, face):
    embeds, _, pooled, _ = pipe.encode_prompt(
        ["a"], pipe.prepare_face(face), do_classifier_free_guidance=False
    )
    same = pipe.encode_prompt("a", face_image=face)  # any face input, and a single prompt string
    assert torch.equal(same[0], embeds) and torch.equal(same[2], pooled)
    direct = pipe(face_image=face, prompt="a", generator=seeded(0), **call_kwargs())
    from_embeds = pipe(
        prompt_embeds=embeds, pooled_prompt_embeds=pooled, generator=seeded(0), **call_kwargs()
    )
    np.testing.assert_allclose(from_embeds.images, direct.images, atol=1e-6)
    assert from_embeds.face is None
    with pytest.raises(ValueError, match="face_image is not used with prompt_embeds"):
        pipe(face_image=face, prompt_embeds=embeds, pooled_prompt_embeds=pooled, **call_kwargs())
    negative = pipe.encode_negative_prompt(["blurry"])
    with pytest.raises(ValueError, match="either negative_prompt or negative_prompt_embeds"):
        pipe(face_image=face, prompt="a", negative_prompt="x", negative_prompt_embeds=negative[0],
             negative_pooled_prompt_embeds=negative[1], **call_kwargs())  # fmt: skip


def test_negative_cache_follows_new_encoder_weights(pipe):
    before = pipe.encode_negative_prompt(["blurry"])[0]
    state = {
        k: v * 1.5 if v.is_floating_point() else v for k, v in pipe.faceclip_encoder.state_dict().items()
    }
    pipe.faceclip_encoder.load_state_dict(state)
    after = pipe.encode_negative_prompt(["blurry"])[0]
    assert pipe.negative_cache_info().misses == 2
    assert not torch.allclose(before, after)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_model_cpu_offload(pipe, face):
    reference = pipe.to("cuda")(face_image=face, prompt="a", generator=seeded(0), **call_kwargs())
    pipe.to("cpu")
    pipe.enable_model_cpu_offload()
    out = pipe(face_image=face, prompt="a", generator=seeded(0), **call_kwargs())
    np.testing.assert_allclose(out.images, reference.images, atol=1e-3)
    assert pipe.unet.device.type == "cpu"  # moved back after the call
