"""Stock SDXL vs FaceCLIP-SDXL on the CPU: full-size architecture, random weights, bf16, at a small size.

The same measurement as ``pipeline_gpu.py`` (see ``pipeline_bench.py``), scaled down to run on a laptop-class
CPU: 128x128 pixels, 2 steps, one timed image. Needs about 10 GB of RAM (bf16 weights) and no network;
building the models alone takes minutes on a small machine.

    python benchmarks/pipeline_cpu.py [--size 128] [--steps 2] [--json results.json]
"""

from __future__ import annotations

import sys

from pipeline_bench import main

DEFAULTS = {
    "device": "cpu",
    "dtype": "bf16",
    "size": 128,
    "steps": 2,
    "repeats": 1,
    "offload": "off",
    "warmup_steps": 1,
}

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], DEFAULTS))
