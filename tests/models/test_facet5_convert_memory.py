"""Converting a multi-GB file in the released ``face_t5_encoder.pt`` layout keeps peak RSS bounded."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PEAK_RSS_LIMIT_GB = 4.0

MAKE_FILE = """
import sys, torch
from tests.models.facet5_reference import reduced_manifest
# The released layout at full width, T5 cut to 4 blocks (4.8 GB in bf16); contents are irrelevant here.
state_dict = {key: torch.empty(shape, dtype=getattr(torch, dtype)) for key, shape, dtype in reduced_manifest((4, 6, 24))}
torch.save(state_dict, sys.argv[1])
"""

CONVERT = """
import json, re, sys, time
from faceclip.convert import convert_facet5_encoder
start = time.perf_counter()
convert_facet5_encoder(sys.argv[1], sys.argv[2])
peak_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print(json.dumps({"peak_rss_gb": peak_kb / 2**20, "seconds": time.perf_counter() - start}))
"""


@pytest.mark.slow
def test_converting_a_multi_gb_released_file_keeps_peak_rss_under_4_gb(tmp_path):
    root = Path(__file__).parents[2]
    env = {"PYTHONPATH": f"{root / 'src'}:{root}", "PATH": "/usr/bin:/bin"}
    source, out = tmp_path / "face_t5_encoder.pt", tmp_path / "converted"
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MAKE_FILE), str(source)], check=True, env=env, cwd=root
    )
    size_gb = source.stat().st_size / 2**30
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CONVERT), str(source), str(out)],
        check=True, env=env, cwd=root, capture_output=True, text=True,
    )  # fmt: skip
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(
        f"converted {size_gb:.2f} GiB in {report['seconds']:.0f} s, peak RSS {report['peak_rss_gb']:.2f} GiB"
    )
    assert size_gb > 4
    index = json.loads((out / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 4
    assert report["peak_rss_gb"] < PEAK_RSS_LIMIT_GB
