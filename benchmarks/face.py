"""Benchmark face detection + alignment on a 1024 px photo (median of repeated runs).

    python benchmarks/face.py [--image PHOTO] [--repeats 20] [--backend opencv]

Without ``--image`` it uses tests/data/faces/astronaut.png upscaled to 1024 x 1024 (face ~240 px wide).
Prints one line per stage: detection alone, alignment without refinement, the default alignment (detection,
refinement, 448 px warp) and an identity vector from a photo. Wall times depend on the machine and its load; CPU time (summed over threads) less so.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from faceclip.face import FaceAnalyzer, load_image

DEFAULT_IMAGE = Path(__file__).resolve().parents[1] / "tests" / "data" / "faces" / "astronaut.png"


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> tuple[float, float]:
    """Median wall time and median process CPU time of ``fn()`` over ``repeats`` runs, in milliseconds.

    CPU time (all threads) is less sensitive than wall time to other processes competing for the cores.
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--image", type=Path, default=None, help="photo to use (default: astronaut at 1024 px)"
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--backend", default="opencv", choices=("opencv", "insightface"))
    args = parser.parse_args(argv)

    if args.image is None:
        photo = load_image(DEFAULT_IMAGE).resize((1024, 1024), Image.Resampling.BICUBIC)
    else:
        photo = load_image(args.image)
    analyzer = FaceAnalyzer(backend=args.backend)
    single_pass = FaceAnalyzer(backend=args.backend, refine_steps=0)
    stages = {
        "detect": lambda: analyzer.detect(photo),
        "align, single pass (448 px)": lambda: single_pass.align(photo),
        "align, refined (448 px, default)": lambda: analyzer.align(photo),
        "embed from photo (align 112 px + recogniser)": lambda: analyzer.embed(photo),
    }
    print(
        f"faceclip face benchmark: {photo.size[0]}x{photo.size[1]} photo, backend {args.backend}, "
        f"median of {args.repeats} runs; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}",
        file=sys.stdout,
    )
    print(f"  {'stage':<46} {'wall ms':>9} {'CPU ms':>9}")
    for name, fn in stages.items():
        wall, cpu = median_ms(fn, args.repeats)
        print(f"  {name:<46} {wall:9.1f} {cpu:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
