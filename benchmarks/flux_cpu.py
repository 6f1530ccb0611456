"""Stock FLUX vs FaceT5-FLUX (same true CFG 3.5) on the CPU, on the tiny components: ratio of medians.

Defaults: ``--arch tiny``, fp32, 128x128 pixels, 8 steps, 5 timed images per pipeline (interleaved), and the
low-memory modes that run on a CPU (group offloading, VAE tiling; torchao int8 if installed). Seconds; no
network.

    python benchmarks/flux_cpu.py [--steps 8] [--repeats 5] [--json results.json]
"""

from __future__ import annotations

import sys

from flux_bench import main

DEFAULTS = {
    "device": "cpu",
    "dtype": "fp32",
    "arch": "tiny",
    "size": 128,
    "steps": [8],
    "repeats": 5,
    "modes": ["resident", "group_offload", "vae_tiling", "int8"],
}

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], DEFAULTS))
