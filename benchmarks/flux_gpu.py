"""Stock FLUX.1-dev vs FaceT5-FLUX on a GPU: full-size architecture, random weights, 1024x1024, bf16.

Seconds per image (median), their ratio (goal: FaceT5-FLUX at most 1.02x stock FLUX with the same true CFG)
and peak GPU memory, at 28 and 50 steps, resident and in every low-memory mode (model / sequential / group
offload, VAE tiling, torchao int8 and bitsandbytes 4-bit where installed; goal: under 16 GB). Needs about 70 GB
of host RAM to build the models and no network. Expect 30-60 minutes on one H100 with every mode; pick modes
with ``--modes``.

    python benchmarks/flux_gpu.py [--steps 28 50] [--modes resident model_offload int8] [--json results.json]
"""

from __future__ import annotations

import sys

from flux_bench import MODES, main

DEFAULTS = {
    "device": "cuda",
    "dtype": "bf16",
    "arch": "full",
    "size": 1024,
    "steps": [28, 50],
    "repeats": 3,
    "modes": list(MODES),
}

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], DEFAULTS))
