"""Converting a multi-GB file in the released ``face_t5_encoder.pt`` layout keeps peak RSS bounded."""

from __future__ import annotations

import json

import pytest
from tests.peak_rss import convert_and_measure, run_python

PEAK_RSS_LIMIT_GB = 4.0

MAKE_FILE = """
import sys, torch
from tests.models.facet5_reference import reduced_manifest
# The released layout at full width, T5 cut to 4 blocks (4.8 GB in bf16); contents are irrelevant here.
state_dict = {key: torch.empty(shape, dtype=getattr(torch, dtype)) for key, shape, dtype in reduced_manifest((4, 6, 24))}
torch.save(state_dict, sys.argv[1])
"""

CONVERT = """
from faceclip.convert import convert_facet5_encoder
convert_facet5_encoder(sys.argv[1], sys.argv[2])
"""


@pytest.mark.slow
def test_converting_a_multi_gb_released_file_keeps_peak_rss_under_4_gb(tmp_path):
    source, out = tmp_path / "face_t5_encoder.pt", tmp_path / "converted"
    run_python(MAKE_FILE, str(source))
    size_gb = source.stat().st_size / 2**30
    report = convert_and_measure(CONVERT, str(source), str(out))
    print(
        f"converted {size_gb:.2f} GiB in {report['seconds']:.0f} s, peak RSS {report['peak_rss_gb']:.2f} GiB"
    )
    assert size_gb > 4
    index = json.loads((out / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 4
    assert report["peak_rss_gb"] < PEAK_RSS_LIMIT_GB
