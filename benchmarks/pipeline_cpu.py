"""Stock SDXL vs FaceCLIP-SDXL on the CPU: full-size architecture, random weights, bf16, at a small size.

The same measurement as ``pipeline_gpu.py`` (see ``pipeline_bench.py``), scaled down to run on a laptop-class
CPU: 256x256 pixels, 4 steps, one timed image. Needs about 10 GB of RAM (bf16 weights) and no network.

    python benchmarks/pipeline_cpu.py [--size 256] [--steps 4] [--json results.json]
"""

from __future__ import annotations

import sys

from pipeline_bench import main

DEFAULTS = {"device": "cpu", "dtype": "bf16", "size": 256, "steps": 4, "repeats": 1, "offload": "off"}

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], DEFAULTS))
