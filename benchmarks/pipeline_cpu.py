"""Stock SDXL vs FaceCLIP-SDXL on the CPU, at a small size: the same measurement as ``pipeline_gpu.py``.

Defaults: ``--arch small`` (the SDXL / FaceCLIP layout with every width divided by 4: all blocks, layers and
heads kept, about 1/16 of the parameters), fp32 (CPUs without native bf16 run bf16 matrix products tens of
times slower), 256x256 pixels, 4 steps, 2 timed images. About 2 GB of RAM, no network. ``--arch full
--dtype bf16`` measures the real sizes (about 10 GB of RAM; fast only on CPUs with bf16 instructions).

    python benchmarks/pipeline_cpu.py [--arch small|full] [--size 256] [--steps 4] [--json results.json]
"""

from __future__ import annotations

import sys

from pipeline_bench import main

DEFAULTS = {
    "device": "cpu",
    "dtype": "fp32",
    "size": 256,
    "steps": 4,
    "repeats": 2,
    "offload": "off",
    "arch": "small",
}

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], DEFAULTS))
