"""Stock FLUX.1 vs FaceT5-FLUX with the same true CFG: seconds per image (median) and peak memory, per mode.

Everything is built from configs with random weights (no downloads): ``--arch full`` is FLUX.1-dev's
transformer and VAE with the full FaceT5 encoder (T5-XXL, CLIP-L, fuser, face ViT), ``--arch tiny`` the tiny
test components. Both pipelines share the transformer, VAE and scheduler; stock FLUX encodes the prompt and the
negative prompt with the T5 and CLIP-L inside the FaceT5 encoder (the same modules) on every call, FaceT5-FLUX
encodes face + prompt with the FaceT5 encoder and reuses its cached zero-face negative. Used by ``flux_cpu.py``
and ``flux_gpu.py``; run those.

Modes (``--modes``): ``resident`` (everything on the device), ``model_offload`` (``enable_model_cpu_offload``),
``sequential_offload``, ``group_offload`` (the transformer's blocks streamed, diffusers' group offloading),
``vae_tiling``, ``int8`` (torchao int8 weight-only transformer, if torchao is installed) and ``nf4``
(bitsandbytes 4-bit transformer, if installed). Stock FLUX is measured in the ``resident`` mode (the baseline
of the ratio); FaceT5-FLUX in every mode.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import warnings
from collections.abc import Callable

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from pipeline_bench import build, clip_tokenizer, peak_memory_gib, synchronize, timed

from faceclip.models.facet5_encoder import FaceT5Encoder, facet5_config
from faceclip.pipelines.flux import FaceT5FluxPipeline
from faceclip.pipelines.flux.architectures import architecture_config
from faceclip.pipelines.flux.family import NEGATIVE_PROMPT
from faceclip.pipelines.flux.tiny import build_tiny_components, build_tiny_t5_tokenizer

PROMPT = "a woman wearing a blue denim shirt and khaki pants, on a rocky desert plateau"
MODES = ("resident", "model_offload", "sequential_offload", "group_offload", "vae_tiling", "int8", "nf4")


def build_pipelines(device: torch.device, dtype: torch.dtype, arch: str) -> tuple[FluxPipeline, FaceT5FluxPipeline]:
    """Stock FLUX and FaceT5-FLUX sharing transformer, VAE and scheduler, and FLUX's two text encoders."""
    if arch == "tiny":
        parts = build_tiny_components()
        for name in ("transformer", "vae", "faceclip_encoder"):
            parts[name] = parts[name].to(device=device, dtype=dtype)
    else:
        encoder = build(lambda: FaceT5Encoder.from_config(facet5_config("facet5-flux")), device, dtype)
        encoder.cast(dtype)
        parts = {
            "scheduler": FlowMatchEulerDiscreteScheduler.from_config(architecture_config("flux_scheduler")),
            "vae": build(lambda: AutoencoderKL.from_config(architecture_config("flux_vae")), device, dtype),
            "transformer": build(
                lambda: FluxTransformer2DModel.from_config(architecture_config("flux_transformer")), device, dtype
            ),
            "faceclip_encoder": encoder,
            "tokenizer_2": build_tiny_t5_tokenizer(),  # no T5 vocabulary offline; the compute is the same
        }
    encoder = parts["faceclip_encoder"]
    stock = FluxPipeline(
        scheduler=parts["scheduler"], vae=parts["vae"], transformer=parts["transformer"],
        text_encoder=encoder.text_encoder, tokenizer=clip_tokenizer(),
        text_encoder_2=encoder.text_encoder_2, tokenizer_2=parts["tokenizer_2"],
    )  # fmt: skip
    facet5 = FaceT5FluxPipeline(**parts)
    for pipe in (stock, facet5):
        pipe.set_progress_bar_config(disable=True)
    return stock, facet5


def runners(stock, facet5, face, size: int, true_cfg: float, length: int) -> dict[str, Callable[[int], None]]:
    def common(steps: int) -> dict:
        return {"height": size, "width": size, "num_inference_steps": steps, "guidance_scale": 1.0,
                "true_cfg_scale": true_cfg, "generator": torch.Generator().manual_seed(0), "output_type": "pil"}  # fmt: skip

    def run_stock(steps: int) -> None:
        stock(prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, max_sequence_length=length, **common(steps))

    def run_facet5(steps: int) -> None:
        facet5(face_image=face, prompt=PROMPT, **common(steps))

    return {"stock_flux": run_stock, "facet5_flux": run_facet5}


def enter_mode(pipe: FaceT5FluxPipeline, mode: str, device: torch.device) -> bool:
    """Put ``pipe`` in ``mode``; False when the mode cannot run here (skipped, with a log line)."""
    if mode in ("model_offload", "sequential_offload") and device.type != "cuda":
        logging.info("%s: needs a CUDA device; skipped", mode)
        return False
    if mode == "model_offload":
        pipe.enable_model_cpu_offload(device=device)
    elif mode == "sequential_offload":
        pipe.enable_sequential_cpu_offload(device=device)
    elif mode == "group_offload":
        pipe.to(device)
        pipe.transformer.to("cpu")
        pipe.transformer.enable_group_offload(
            onload_device=device, offload_device=torch.device("cpu"), offload_type="block_level",
            num_blocks_per_group=1, use_stream=device.type == "cuda",
        )  # fmt: skip
    elif mode == "vae_tiling":
        pipe.to(device)
        pipe.vae.enable_tiling()
    elif mode in ("int8", "nf4"):
        return _quantize(pipe, mode, device)
    else:
        pipe.to(device)
    return True


def _quantize(pipe: FaceT5FluxPipeline, mode: str, device: torch.device) -> bool:
    """Replace the transformer by a quantized copy through diffusers' quantization configs."""
    import importlib.util
    import tempfile

    from diffusers import BitsAndBytesConfig, TorchAoConfig

    backend = {"int8": "torchao", "nf4": "bitsandbytes"}[mode]
    if importlib.util.find_spec(backend) is None:
        logging.info("%s: %s is not installed; skipped", mode, backend)
        return False
    config = (
        TorchAoConfig("int8_weight_only")
        if mode == "int8"
        else BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    )
    with tempfile.TemporaryDirectory() as folder:
        pipe.transformer.save_pretrained(folder)
        pipe.transformer = FluxTransformer2DModel.from_pretrained(
            folder, quantization_config=config, torch_dtype=pipe.transformer.dtype
        )
    pipe.to(device)
    return True


def measure(run: Callable[[int], None], device: torch.device, steps: int, warmup: int, repeats: int) -> dict:
    memory = peak_memory_gib(run, device, warmup)  # also the warm-up call
    times = [timed(run, device, steps) for _ in range(repeats)]
    key = "peak_gpu_gib" if device.type == "cuda" else "peak_process_rss_gib"
    return {"median_s_per_image": statistics.median(times), "runs_s": [round(t, 3) for t in times], key: memory}


def parse_args(argv: list[str] | None, defaults: dict) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=defaults["device"])
    parser.add_argument("--dtype", default=defaults["dtype"], choices=("bf16", "fp16", "fp32"))
    parser.add_argument("--arch", choices=("full", "tiny"), default=defaults["arch"])
    parser.add_argument("--size", type=int, default=defaults["size"], help="image height = width in pixels")
    parser.add_argument("--steps", type=int, nargs="+", default=defaults["steps"], help="e.g. 28 50")
    parser.add_argument("--repeats", type=int, default=defaults["repeats"], help="timed images per setting")
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--true-cfg", type=float, default=3.5)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=defaults["modes"])
    parser.add_argument("--json", help="also write the results to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None, defaults: dict) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    warnings.filterwarnings("ignore", message="invalid value encountered in cast")  # random weights -> NaNs
    args = parse_args(argv, defaults)
    device, dtype = torch.device(args.device), {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    torch.manual_seed(0)
    stock, facet5 = build_pipelines(torch.device("cpu") if device.type != "cuda" else device, dtype, args.arch)
    face = torch.rand(1, 3, 448, 448, generator=torch.Generator().manual_seed(0))
    length = facet5.max_sequence_length
    results = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(), "arch": args.arch, "dtype": args.dtype, "size": args.size,
        "true_cfg": args.true_cfg, "repeats": args.repeats, "settings": {},
    }  # fmt: skip
    for steps in args.steps:
        runs = runners(stock, facet5, face, args.size, args.true_cfg, length)
        stock.to(device)
        facet5.to(device)
        # Baseline and FaceT5-FLUX interleaved, so clock drift hits both alike.
        times = {name: [] for name in runs}
        memory = {name: peak_memory_gib(run, device, args.warmup_steps) for name, run in runs.items()}
        for _ in range(args.repeats):
            for name, run in runs.items():
                times[name].append(timed(run, device, steps))
        for name in runs:
            results["settings"][f"{name}/{steps}"] = {"median_s_per_image": statistics.median(times[name]),
                                                     "runs_s": [round(t, 3) for t in times[name]], "memory_gib": memory[name]}  # fmt: skip
        base = results["settings"][f"stock_flux/{steps}"]["median_s_per_image"]
        results[f"ratio_facet5_over_stock/{steps}"] = results["settings"][f"facet5_flux/{steps}"]["median_s_per_image"] / base
        stock.to("cpu")
        for mode in (m for m in args.modes if m != "resident"):
            _, fresh = build_pipelines(torch.device("cpu"), dtype, args.arch) if args.arch == "tiny" else (None, facet5)
            if not enter_mode(fresh, mode, device):
                continue
            run = runners(stock, fresh, face, args.size, args.true_cfg, length)["facet5_flux"]
            results["settings"][f"facet5_flux+{mode}/{steps}"] = measure(run, device, steps, args.warmup_steps, args.repeats)
            fresh.remove_all_hooks()
            synchronize(device)
    print_table(results)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


def print_table(results: dict) -> None:
    print(f"\n{results['device']}, {results['arch']} arch, {results['dtype']}, {results['size']}x{results['size']}, "
          f"true CFG {results['true_cfg']}, median of {results['repeats']} image(s)")  # fmt: skip
    print(f"{'setting/steps':<36} {'s/image':>9} {'peak GiB':>9}")
    for name, row in results["settings"].items():
        memory = next(v for k, v in row.items() if "gib" in k)
        print(f"{name:<36} {row['median_s_per_image']:>9.3f} {memory:>9.2f}")
    for key, value in results.items():
        if key.startswith("ratio_"):
            print(f"{key}: {value:.3f}")
