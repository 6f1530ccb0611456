"""Stock SDXL vs FaceCLIP-SDXL: seconds per image and peak memory, on the full-size architecture.

(``--arch small`` keeps the layout and divides every width by 4, for CPUs without fast bf16.)

Everything is built from configs shipped in the package (SDXL UNet/VAE/scheduler, the FaceCLIP encoder) or
written below (SDXL's two CLIP text encoders), with random weights: no downloads, so it runs on a machine
without network. Random weights make noise images, but the compute is that of the real models.

Both pipelines share the same UNet and VAE. Stock SDXL encodes the prompt and the negative prompt with its own
text encoders on every call; FaceCLIP-SDXL encodes the (aligned) face and the prompt with the joint encoder
and reuses its cached negative embedding after the warm-up call. Face detection is not included (pass an
aligned tensor). Used by ``pipeline_gpu.py`` and ``pipeline_cpu.py``; run those.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
import resource
import sys
import time
import warnings
from collections.abc import Callable

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from faceclip.models import FaceCLIPEncoder, create_encoder
from faceclip.models import encoder_config as load_encoder_config
from faceclip.models.tokenizer import END_TOKEN, START_TOKEN, get_tokenizer
from faceclip.pipelines import FaceCLIPStableDiffusionXLPipeline
from faceclip.pipelines.sdxl.architectures import architecture_config
from faceclip.pipelines.sdxl.family import NEGATIVE_PROMPT as DEFAULT_NEGATIVE_PROMPT

PROMPT = "a woman wearing a blue denim shirt and khaki pants, on a rocky desert plateau"

# SDXL base's text encoders: OpenAI CLIP ViT-L/14 and OpenCLIP ViT-bigG/14 text towers. "tiny" matches the
# faceclip-tiny encoder's widths (32 + 48 = 80 prompt dims, 48 pooled) for a quick smoke test of this script.
TEXT_ENCODER_CONFIGS = {
    "full": (
        {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
         "hidden_act": "quick_gelu", "projection_dim": 768},
        {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20,
         "hidden_act": "gelu", "projection_dim": 1280},
    ),
    "tiny": (
        {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "hidden_act": "quick_gelu", "projection_dim": 32},
        {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
         "hidden_act": "gelu", "projection_dim": 48},
    ),
}  # fmt: skip
TEXT_COMMON = {"vocab_size": 49408, "max_position_embeddings": 77, "layer_norm_eps": 1e-5}


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Create parameters directly in ``dtype`` (halves peak memory while building bf16 models)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build(
    factory: Callable[[], torch.nn.Module], device: torch.device, dtype: torch.dtype
) -> torch.nn.Module:
    """Build a randomly initialised model directly on ``device`` in ``dtype``."""
    with torch.device(device), default_dtype(dtype):
        model = factory()
    if any(p.dtype != dtype for p in model.parameters()):
        model = model.to(dtype=dtype)
    return model.to(device=device).eval().requires_grad_(False)


def clip_tokenizer() -> CLIPTokenizer:
    """transformers' CLIP tokenizer with the CLIP vocabulary shipped in faceclip (no download)."""
    ours = get_tokenizer()
    merges = sorted(ours.merge_ranks, key=ours.merge_ranks.get)
    # transformers spells the special tokens as OpenAI does; same ids (49406, 49407).
    spelling = {START_TOKEN: "<|startoftext|>", END_TOKEN: "<|endoftext|>"}
    vocab = {spelling.get(token, token): i for token, i in ours.vocab.items()}
    return CLIPTokenizer(vocab=vocab, merges=list(merges), model_max_length=77)


SMALL = 4
"""``--arch small``: the full layout (every depth, layer and head count) with every width divided by this."""


def text_configs(arch: str) -> tuple[dict, dict]:
    if arch != "small":
        return TEXT_ENCODER_CONFIGS[arch]
    widths = ("hidden_size", "intermediate_size", "projection_dim")
    return tuple(c | {k: c[k] // SMALL for k in widths} for c in TEXT_ENCODER_CONFIGS["full"])


def unet_config(arch: str) -> dict:
    if arch == "full":
        return architecture_config("sdxl_unet")
    text_l, text_g = text_configs(arch)
    if arch == "small":
        config = architecture_config("sdxl_unet")
        config["block_out_channels"] = [c // SMALL for c in config["block_out_channels"]]
        config["addition_time_embed_dim"] //= SMALL
        config["norm_num_groups"] = 16
    else:
        config = architecture_config("tiny_unet")
    return config | {
        "cross_attention_dim": text_l["hidden_size"] + text_g["hidden_size"],
        "projection_class_embeddings_input_dim": 6 * config["addition_time_embed_dim"]
        + text_g["projection_dim"],
    }


def vae_config(arch: str) -> dict:
    if arch == "tiny":
        return architecture_config("tiny_vae")
    config = architecture_config("sdxl_vae")
    if arch == "small":
        config["block_out_channels"] = [c // SMALL for c in config["block_out_channels"]]
    return config


def faceclip_encoder(arch: str) -> FaceCLIPEncoder:
    if arch == "tiny":
        return create_encoder("faceclip-tiny")
    # Converted released weights keep one face ViT for both branches (the release holds two identical copies).
    config = load_encoder_config("faceclip-sdxl") | {"share_face_encoder": True}
    if arch == "small":
        widths = {
            "text": ("width", "mlp_dim", "projection_dim"),
            "face": ("width", "mlp_dim", "identity_dim"),
            "fuser": ("deform_mlp_dim", "text_mlp_dim", "fusion_dim"),
        }
        for branch in ("branch_l_config", "branch_g_config"):
            for part, keys in widths.items():
                config[branch][part] = config[branch][part] | {
                    k: config[branch][part][k] // SMALL for k in keys
                }
    return FaceCLIPEncoder.from_config(config)


def build_pipelines(device: torch.device, dtype: torch.dtype, arch: str = "full"):
    """Stock SDXL and FaceCLIP-SDXL (random weights) sharing one UNet and one VAE."""
    started = time.perf_counter()
    config_l, config_g = (CLIPTextConfig(**TEXT_COMMON, **c) for c in text_configs(arch))
    unet = build(lambda: UNet2DConditionModel.from_config(unet_config(arch)), device, dtype)
    vae = build(lambda: AutoencoderKL.from_config(vae_config(arch)), device, dtype)
    text_encoder = build(lambda: CLIPTextModel(config_l), device, dtype)
    text_encoder_2 = build(lambda: CLIPTextModelWithProjection(config_g), device, dtype)
    encoder = build(lambda: faceclip_encoder(arch), device, dtype)
    tokenizer = clip_tokenizer()
    stock = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_config(architecture_config("sdxl_scheduler")),
        add_watermarker=False,
    )
    faceclip = FaceCLIPStableDiffusionXLPipeline(
        vae=vae,
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_config(architecture_config("sdxl_scheduler")),
        faceclip_encoder=encoder,
    )
    for pipe in (stock, faceclip):
        pipe.set_progress_bar_config(disable=True)
    sizes = {
        "unet": unet,
        "vae": vae,
        "sdxl_text_encoders": [text_encoder, text_encoder_2],
        "faceclip_encoder": encoder,
    }
    params = {
        name: sum(p.numel() for m in (mods if isinstance(mods, list) else [mods]) for p in m.parameters())
        for name, mods in sizes.items()
    }
    logging.info("built the models in %.1f s: %s", time.perf_counter() - started, params)
    return stock, faceclip, params


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[int], None], device: torch.device, steps: int) -> float:
    """Seconds for one image."""
    synchronize(device)
    started = time.perf_counter()
    run(steps)
    synchronize(device)
    return time.perf_counter() - started


def peak_memory_gib(run: Callable[[int], None], device: torch.device, steps: int) -> float:
    """Peak GPU memory of one call (the process's peak RSS on the CPU); the call also warms up."""
    if device.type != "cuda":
        run(steps)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    run(steps)
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**30


def runners(stock, faceclip, face: torch.Tensor, height: int, width: int, guidance: float):
    def common(steps: int) -> dict:
        return {
            "height": height,
            "width": width,
            "num_inference_steps": steps,
            "guidance_scale": guidance,
            "generator": torch.Generator().manual_seed(0),
        }

    def run_stock(steps: int) -> None:
        stock(prompt=PROMPT, negative_prompt=DEFAULT_NEGATIVE_PROMPT, **common(steps))

    def run_faceclip(steps: int) -> None:
        faceclip(face_image=face, prompt=PROMPT, **common(steps))

    return {"stock_sdxl": run_stock, "faceclip_sdxl": run_faceclip}


def parse_args(argv: list[str] | None, defaults: dict) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=defaults["device"])
    parser.add_argument("--dtype", default=defaults["dtype"], choices=("bf16", "fp16", "fp32"))
    parser.add_argument("--size", type=int, default=defaults["size"], help="image height = width in pixels")
    parser.add_argument("--steps", type=int, default=defaults["steps"])
    parser.add_argument("--repeats", type=int, default=defaults["repeats"], help="timed images per setting")
    parser.add_argument("--warmup-steps", type=int, default=defaults.get("warmup_steps", 2))
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument(
        "--offload",
        choices=("both", "off", "on"),
        default=defaults["offload"],
        help="with and/or without enable_model_cpu_offload (GPU only)",
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument(
        "--arch",
        choices=("full", "small", "tiny"),
        default=defaults.get("arch", "full"),
        help="full: SDXL and FaceCLIP sizes; small: the same layout, widths / 4; tiny: a quick smoke test",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None, defaults: dict) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    warnings.filterwarnings("ignore", message="invalid value encountered in cast")  # random weights -> NaNs
    args = parse_args(argv, defaults)
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    if args.offload != "off" and device.type != "cuda":
        if args.offload == "on":
            raise SystemExit("--offload on needs a CUDA device")
        args.offload = "off"
    torch.manual_seed(0)
    build_device = device if args.offload != "on" else torch.device("cpu")
    stock, faceclip, params = build_pipelines(build_device, dtype, args.arch)
    face = torch.rand(1, 3, 448, 448, generator=torch.Generator().manual_seed(0))
    results = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "arch": args.arch,
        "dtype": args.dtype,
        "size": args.size,
        "steps": args.steps,
        "repeats": args.repeats,
        "guidance": args.guidance,
        "parameters": params,
        "settings": {},
    }
    modes = {"both": [False, True], "off": [False], "on": [True]}[args.offload]
    memory_key = "peak_gpu_gib" if device.type == "cuda" else "peak_process_rss_gib"
    for offload in modes:
        runs = runners(stock, faceclip, face, args.size, args.size, args.guidance)
        times: dict[str, list[float]] = {name: [] for name in runs}
        memory = {}
        for name, run in runs.items():
            pipe, other = (stock, faceclip) if name == "stock_sdxl" else (faceclip, stock)
            other.to("cpu")  # only the measured pipeline's models on the device
            if offload:
                pipe.enable_model_cpu_offload(device=device)
            else:
                pipe.to(device)
            memory[name] = peak_memory_gib(run, device, args.warmup_steps)  # also the warm-up call
            if offload:  # offload hooks sit on the shared UNet and VAE: one pipeline at a time
                times[name] = [timed(run, device, args.steps) for _ in range(args.repeats)]
                pipe.remove_all_hooks()
        if not offload:  # both resident; interleaved, so clock drifts hit both pipelines alike
            stock.to(device)
            faceclip.to(device)
            for _ in range(args.repeats):
                for name, run in runs.items():
                    times[name].append(timed(run, device, args.steps))
        for name in runs:
            key = f"{name}{'_offload' if offload else ''}"
            results["settings"][key] = {
                "s_per_image": sum(times[name]) / len(times[name]),
                "runs_s": [round(t, 3) for t in times[name]],
                memory_key: memory[name],
            }
            logging.info("%s: %s", key, results["settings"][key])
    for suffix in ("", "_offload"):
        rows = results["settings"]
        if f"stock_sdxl{suffix}" in rows:
            ratio = rows[f"faceclip_sdxl{suffix}"]["s_per_image"] / rows[f"stock_sdxl{suffix}"]["s_per_image"]
            results[f"ratio_faceclip_over_stock{suffix}"] = ratio
    print_table(results)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


def print_table(results: dict) -> None:
    memory_key = "peak_gpu_gib" if any("peak_gpu_gib" in r for r in results["settings"].values()) else None
    print(
        f"\n{results['device']}, {results['dtype']}, {results['size']}x{results['size']}, {results['steps']} steps, "
        f"guidance {results['guidance']}, {results['repeats']} timed image(s) per row"
    )
    header = f"{'setting':<24} {'s/image':>9}" + (
        f" {'peak GPU GiB':>13}" if memory_key else f" {'peak RSS GiB':>13}"
    )
    print(header)
    for name, row in results["settings"].items():
        memory = row.get(memory_key or "peak_process_rss_gib")
        print(f"{name:<24} {row['s_per_image']:>9.3f} {memory:>13.2f}")
    for key in ("ratio_faceclip_over_stock", "ratio_faceclip_over_stock_offload"):
        if key in results:
            print(f"{key}: {results[key]:.3f}")
