"""``__call__`` and ``encode_prompt`` as on stock SDXL: arguments, state properties, callbacks, guidance, batching,
offloading and the once-per-call input checks."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from faceclip.pipelines import FaceCLIPStableDiffusionXLPipeline, build_tiny_components
from faceclip.pipelines.sdxl import pipeline_faceclip_sdxl


def call_kwargs(**overrides) -> dict:
    return {"num_inference_steps": 2, "height": 64, "width": 64, "output_type": "np"} | overrides


def seeded(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def unet_batch_sizes(pipe) -> list[int]:
    sizes: list[int] = []
    pipe.unet.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[0]))
    return sizes


def test_sdxl_arguments_are_explicit_parameters():
    parameters = inspect.signature(FaceCLIPStableDiffusionXLPipeline.__call__).parameters
    for name in (
        "negative_prompt_embeds",
        "negative_pooled_prompt_embeds",
        "cross_attention_kwargs",
        "guidance_rescale",
        "denoising_end",
        "timesteps",
        "sigmas",
        "eta",
        "original_size",
        "target_size",
        "callback_on_step_end_tensor_inputs",
    ):
        assert name in parameters, name
    assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    assert ":param" not in (FaceCLIPStableDiffusionXLPipeline.__call__.__doc__ or "")
    assert "negative_prompt_embeds" in FaceCLIPStableDiffusionXLPipeline.__call__.__doc__


def test_encode_prompt_returns_sdxl_four_tuple(pipe, face):
    encoder_calls: list[int] = []
    pipe.faceclip_encoder.register_forward_pre_hook(
        lambda _m, args, kwargs: encoder_calls.append(len(kwargs["prompts"])), with_kwargs=True
    )
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        ["a", "b", "c"], face_image=face, num_images_per_prompt=2, negative_prompt="blurry"
    )
    width, pooled_width = pipe.faceclip_encoder.prompt_embeds_dim, pipe.faceclip_encoder.pooled_dim
    assert embeds.shape == negative.shape == (6, 77, width)
    assert pooled.shape == negative_pooled.shape == (6, pooled_width)
    assert encoder_calls == [3, 1]  # the face once for all three prompts; one negative row
    torch.testing.assert_close(embeds[0], embeds[1])  # prompt-major repeats
    assert not torch.allclose(embeds[1], embeds[2])
    without_guidance = pipe.encode_prompt("a", face_image=face, do_classifier_free_guidance=False)
    assert without_guidance[1] is None and without_guidance[3] is None
    again = pipe.encode_prompt(None, prompt_embeds=embeds[:1], pooled_prompt_embeds=pooled[:1])
    torch.testing.assert_close(again[0], embeds[:1])
    torch.testing.assert_close(again[1], pipe.encode_negative_prompt([pipe_default_negative()])[0])


def pipe_default_negative() -> str:
    from faceclip.pipelines.sdxl.family import NEGATIVE_PROMPT

    return NEGATIVE_PROMPT


def test_negative_embeddings_as_parameters_equal_the_negative_prompt(pipe, face):
    negative, negative_pooled = pipe.encode_negative_prompt(["blurry"])
    by_text = pipe(
        face_image=face, prompt="a", negative_prompt="blurry", generator=seeded(0), **call_kwargs()
    )
    by_embeds = pipe(
        face_image=face,
        prompt="a",
        negative_prompt_embeds=negative,
        negative_pooled_prompt_embeds=negative_pooled,
        generator=seeded(0),
        **call_kwargs(),
    )
    np.testing.assert_allclose(by_embeds.images, by_text.images, atol=1e-6)
    with pytest.raises(ValueError, match="negative_pooled_prompt_embeds"):
        pipe(face_image=face, prompt="a", negative_prompt_embeds=negative, **call_kwargs())


def test_state_properties_are_set_during_the_call(pipe, face):
    seen = []

    def record(callback_pipe, step, timestep, tensors):
        assert callback_pipe is pipe
        seen.append(
            (
                pipe.guidance_scale,
                pipe.guidance_rescale,
                pipe.do_classifier_free_guidance,
                pipe.cross_attention_kwargs,
                pipe.denoising_end,
                pipe.num_timesteps,
                pipe.interrupt,
            )
        )
        return tensors

    pipe(
        face_image=face,
        prompt="a",
        guidance_scale=3.5,
        guidance_rescale=0.3,
        cross_attention_kwargs={"scale": 1.0},
        denoising_end=0.5,
        callback_on_step_end=record,
        **call_kwargs(num_inference_steps=4),
    )
    assert seen == [(3.5, 0.3, True, {"scale": 1.0}, 0.5, 2, False)] * 2  # denoising_end: half the steps
    assert pipe.num_timesteps == 2
    pipe(face_image=face, prompt="a", guidance_scale=1.0, **call_kwargs())
    assert pipe.guidance_scale == 1.0 and not pipe.do_classifier_free_guidance and pipe.num_timesteps == 2


def test_interrupt_from_a_callback_skips_the_remaining_steps(pipe, face):
    sizes = unet_batch_sizes(pipe)

    def stop(callback_pipe, step, timestep, tensors):
        callback_pipe._interrupt = True
        return tensors

    out = pipe(face_image=face, prompt="a", callback_on_step_end=stop, **call_kwargs(num_inference_steps=4))
    assert len(sizes) == 1 and pipe.interrupt
    assert out.images.shape == (1, 64, 64, 3)  # still decoded


def test_callback_tensor_inputs_can_be_read_and_replaced(pipe, face):
    shapes = {}

    def inspect_and_zero(_pipe, step, timestep, tensors):
        shapes.update({k: tuple(v.shape) for k, v in tensors.items()})
        return {"latents": torch.zeros_like(tensors["latents"])}

    names = ["latents", "prompt_embeds", "add_text_embeds", "add_time_ids"]
    zeroed = pipe(
        face_image=face,
        prompt="a",
        callback_on_step_end=inspect_and_zero,
        callback_on_step_end_tensor_inputs=names,
        **call_kwargs(output_type="latent"),
    ).images
    encoder = pipe.faceclip_encoder
    assert shapes == {
        "latents": (1, 4, 32, 32),
        "prompt_embeds": (2, 77, encoder.prompt_embeds_dim),  # unconditional and conditional
        "add_text_embeds": (2, encoder.pooled_dim),
        "add_time_ids": (2, 6),
    }
    assert torch.count_nonzero(zeroed) == 0
    with pytest.raises(ValueError, match="not available"):
        pipe(face_image=face, prompt="a", callback_on_step_end_tensor_inputs=["noise_pred"], **call_kwargs())


def test_pipeline_callback_objects_bring_their_tensor_inputs(pipe, face):
    from diffusers.callbacks import SDXLCFGCutoffCallback

    sizes = unet_batch_sizes(pipe)
    cutoff = SDXLCFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=1)
    pipe(face_image=face, prompt="a", callback_on_step_end=cutoff, **call_kwargs(num_inference_steps=3))
    assert sizes == [2, 2, 1]  # guidance switched off after step 1, as on stock SDXL
    assert pipe.guidance_scale == 0.0


def test_guidance_one_runs_without_the_unconditional_half(pipe, face):
    sizes = unet_batch_sizes(pipe)
    plain = pipe(face_image=face, prompt="a", guidance_scale=1.0, generator=seeded(0), **call_kwargs()).images
    guided = pipe(
        face_image=face, prompt="a", guidance_scale=7.0, generator=seeded(0), **call_kwargs()
    ).images
    assert sizes == [1, 1, 2, 2]
    assert np.abs(plain - guided).max() > 1e-3
    rescaled = pipe(
        face_image=face,
        prompt="a",
        guidance_scale=7.0,
        guidance_rescale=0.7,
        generator=seeded(0),
        **call_kwargs(),
    ).images
    assert np.abs(rescaled - guided).max() > 1e-4


def test_each_image_of_a_batch_equals_the_same_seed_alone(pipe, face):
    batch = pipe(
        face_image=face,
        prompt=["a", "b"],
        num_images_per_prompt=2,
        generator=seeded(0, 1, 2, 3),
        **call_kwargs(),
    ).images
    assert batch.shape == (4, 64, 64, 3)
    for index, (prompt, seed) in enumerate([("a", 0), ("a", 1), ("b", 2), ("b", 3)]):
        alone = pipe(face_image=face, prompt=prompt, generator=seeded(seed), **call_kwargs()).images
        np.testing.assert_allclose(batch[index : index + 1], alone, atol=1e-4)


def test_num_images_per_prompt_with_precomputed_embeddings(pipe, face):
    embeds, _, pooled, _ = pipe.encode_prompt(["a", "b"], face, do_classifier_free_guidance=False)
    out = pipe(
        prompt_embeds=embeds, pooled_prompt_embeds=pooled, num_images_per_prompt=3, **call_kwargs()
    ).images
    assert out.shape == (6, 64, 64, 3)
    with pytest.raises(ValueError, match="generator"):
        pipe(prompt_embeds=embeds, pooled_prompt_embeds=pooled, generator=seeded(0, 1, 2), **call_kwargs())


def test_face_values_are_checked_once_per_call(pipe, face, monkeypatch):
    checked: list[tuple[int, ...]] = []
    original = pipeline_faceclip_sdxl.check_face_values
    monkeypatch.setattr(
        pipeline_faceclip_sdxl, "check_face_values", lambda t: checked.append(tuple(t.shape)) or original(t)
    )
    pipe(face_image=face, prompt=["a", "b"], num_images_per_prompt=2, **call_kwargs(num_inference_steps=1))
    assert checked == [(1, 3, 64, 64)]
    broken = face.clone()
    broken[0, 0, 0, 0] = float("nan")
    for bad in (broken, face * 2, face - 1):
        with pytest.raises(ValueError, match=r"finite and lie in \[0, 1\]"):
            pipe(face_image=bad, prompt="a", **call_kwargs())
        with pytest.raises(ValueError, match=r"finite and lie in \[0, 1\]"):
            pipe.encode_prompt("a", face_image=bad)


def test_embeddings_of_the_wrong_width_are_refused(pipe):
    width = pipe.faceclip_encoder.prompt_embeds_dim
    with pytest.raises(ValueError, match=rf"prompt_embeds: expected shape \(B, 77, {width}\)"):
        pipe(
            prompt_embeds=torch.zeros(1, 77, width + 1),
            pooled_prompt_embeds=torch.zeros(1, 4),
            **call_kwargs(),
        )


def test_model_cpu_offload_on_the_cpu_gives_the_same_images(face):
    def make():
        pipe = FaceCLIPStableDiffusionXLPipeline(**build_tiny_components(seed=0))
        pipe.set_progress_bar_config(disable=True)
        return pipe

    reference = make()(face_image=face, prompt="a", generator=seeded(0), **call_kwargs()).images
    offloaded = make()
    offloaded.enable_model_cpu_offload(device="cpu")
    assert offloaded._execution_device == torch.device("cpu", 0)
    out = offloaded(face_image=face, prompt="a", generator=seeded(0), **call_kwargs()).images
    np.testing.assert_allclose(out, reference, atol=1e-6)


def test_sequentially_offloaded_encoder_gets_its_inputs_on_the_execution_device(pipe, face):
    pipe.enable_sequential_cpu_offload(device="cpu")
    encoder = pipe.faceclip_encoder
    assert encoder.device.type == "meta"  # the weights wait on the meta device between calls
    assert encoder.execution_device == pipe._execution_device == torch.device("cpu", 0)
    devices: list[torch.device] = []

    class Seen(Exception):
        pass

    def record(_module, args):
        devices.append(args[0].device)
        raise Seen

    encoder.branch_l.face_encoder.register_forward_pre_hook(record)
    with pytest.raises(Seen):
        pipe.encode_prompt("a", face_image=face)
    with pytest.raises(Seen):
        pipe.encode_negative_prompt(["blurry"])
    assert [d.type for d in devices] == ["cpu", "cpu"]  # not meta, where the weights are


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sequential_cpu_offload_on_cuda(pipe, face):
    reference = pipe.to("cuda")(face_image=face, prompt="a", generator=seeded(0), **call_kwargs()).images
    pipe.to("cpu")
    pipe.enable_sequential_cpu_offload(device="cuda")
    out = pipe(face_image=face, prompt="a", generator=seeded(0), **call_kwargs()).images
    np.testing.assert_allclose(out, reference, atol=1e-3)
    assert pipe.faceclip_encoder.device.type == "meta"
