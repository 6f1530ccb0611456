"""Stock SDXL vs FaceCLIP-SDXL on a GPU: full-size architecture, random weights, 1024x1024, 30 steps, bf16.

Measures seconds per image, their ratio and peak GPU memory, with and without model CPU offload. Needs no
network (everything is built from packaged configs). About 2-4 minutes on one H100.

    python benchmarks/pipeline_gpu.py [--repeats 3] [--offload both|off|on] [--json results.json]
"""

from __future__ import annotations

import sys

from pipeline_bench import main

DEFAULTS = {"device": "cuda", "dtype": "bf16", "size": 1024, "steps": 30, "repeats": 3, "offload": "both"}

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], DEFAULTS))
