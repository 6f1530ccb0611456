"""Benchmark the full-size FaceCLIP encoder: time per call (median of repeated runs).

    python benchmarks/encoder.py [--device auto] [--dtypes fp32,bf16] [--batch-sizes 1,4] [--repeats 5]

Builds ``faceclip-sdxl`` (1.57 B parameters) with seeded random weights (no download; timing does not depend
on the values) and times ``encoder(face_images=..., prompts=..., has_face=...)`` with 112 px faces, one
distinct face and prompt per row, plus a "same face" row: B prompts sharing one face, where the face ViT runs
once. By default the two branches share one face ViT, as with the released weights (they hold identical
copies); ``--face-vit separate`` times two face ViTs. Needs ~7 GB of RAM in fp32. Prints wall-clock medians
and, on the CPU, process CPU-time medians (less sensitive to other jobs competing for the cores).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from faceclip.devices import resolve_device, resolve_dtype
from faceclip.models import create_encoder

PROMPTS = [
    "a woman wearing a blue denim shirt on a rocky desert plateau",
    "a man in a red jacket on a snowy street at night",
    "a portrait in a sunlit cafe, film grain",
    "a person hiking in the mountains at golden hour",
]


def synchronize(device: torch.device) -> None:
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def time_calls(fn, device: torch.device, repeats: int, warmup: int) -> tuple[float, float]:
    """Median wall time and median process CPU time of ``fn()``, in milliseconds."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default auto)")
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16")
    parser.add_argument(
        "--batch-sizes", default="1,4", help="comma-separated batch sizes (<= 4 distinct prompts)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--face-vit", choices=("shared", "separate"), default="shared")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument(
        "--cases", default="distinct,same", help="distinct: one face per row; same: one face for every row"
    )
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    start = time.perf_counter()
    encoder = create_encoder("faceclip-sdxl", seed=0, share_face_encoder=args.face_vit == "shared").to(device)
    n_params = sum(p.numel() for p in encoder.parameters())
    print(f"built faceclip-sdxl ({n_params / 1e9:.3f} B parameters) in {time.perf_counter() - start:.1f} s")
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine()
    )
    print(
        f"device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"face ViT {args.face_vit}, medians of {args.repeats} runs after {args.warmup} warm-up"
    )
    print(f"{'dtype':<6} {'batch':>5} {'faces':<9} {'wall ms':>10} {'cpu ms':>10} {'ms/row':>9}")
    generator = torch.Generator().manual_seed(0)
    for dtype_name in args.dtypes.split(","):
        dtype = resolve_dtype(dtype_name, device)
        encoder.to(dtype)
        for batch in batch_sizes:
            prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
            faces = torch.rand(batch, 3, 112, 112, generator=generator).to(device)
            cases = {"distinct": faces, "same": faces[:1].expand(batch, -1, -1, -1)}
            cases = {
                k: v
                for k, v in cases.items()
                if k in args.cases.split(",") and (k == "distinct" or batch > 1)
            }
            for label, images in cases.items():

                def call(images=images, prompts=prompts):
                    with torch.inference_mode():
                        return encoder(face_images=images, prompts=prompts)

                wall, cpu = time_calls(call, device, args.repeats, args.warmup)
                cpu_text = f"{cpu:10.0f}" if device.type == "cpu" else f"{'-':>10}"
                print(
                    f"{dtype_name:<6} {batch:>5} {label:<9} {wall:10.0f} {cpu_text} {wall / batch:9.0f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
