"""The example workflows: valid JSON in both formats, only existing node types, every link well formed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from faceclip_nodes.legacy import LEGACY_CLASSES

WORKFLOWS = Path(__file__).resolve().parents[2] / "comfyui" / "workflows"
COMFYUI_BUILT_IN = {
    # ComfyUI's own node types the workflows may use, with their outputs' types
    "LoadImage": ["IMAGE", "MASK"],
    "PreviewImage": [],
    "UNETLoader": ["MODEL"],
    "VAELoader": ["VAE"],
    "EmptyLatentImage": ["LATENT"],
    "EmptySD3LatentImage": ["LATENT"],  # FLUX's 16-channel latent
    "KSampler": ["LATENT"],
    "VAEDecode": ["IMAGE"],
    "SaveImage": [],
    "ControlNetLoader": ["CONTROL_NET"],
    "Canny": ["IMAGE"],
    "ControlNetApplyAdvanced": ["CONDITIONING", "CONDITIONING"],
}
OUTPUT_TYPES = {**COMFYUI_BUILT_IN, **{name: list(cls.RETURN_TYPES) for name, cls in LEGACY_CLASSES.items()}}
UI_FILES = ["faceclip_portrait.json", "faceclip_portrait_controlnet.json", "facet5_flux_portrait.json"]
API_FILES = [
    "faceclip_portrait_api.json",
    "faceclip_portrait_controlnet_api.json",
    "facet5_flux_portrait_api.json",
]
FAMILY_NODES = {
    "faceclip": {"FaceCLIPEncoderLoader", "FaceCLIPEncode", "FaceCLIPNegative"},
    "facet5": {"FaceT5EncoderLoader", "FaceT5Encode", "FaceT5Negative"},
}
"""Each workflow's family (its name's first word) -> the encoder nodes it must use."""


def load(name: str) -> dict:
    return json.loads((WORKFLOWS / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", API_FILES)
def test_api_workflow_links_existing_nodes_and_outputs(name):
    prompt = load(name)
    for node_id, node in prompt.items():
        assert node["class_type"] in OUTPUT_TYPES, node["class_type"]
        for value in node["inputs"].values():
            if isinstance(value, list):
                source, slot = value
                assert source in prompt and slot < len(OUTPUT_TYPES[prompt[source]["class_type"]]), (
                    node_id,
                    value,
                )
    family = FAMILY_NODES[name.split("_")[0]]
    assert family | {"FaceCLIPFace", "KSampler", "UNETLoader", "VAEDecode", "SaveImage"} <= {
        node["class_type"] for node in prompt.values()
    }


@pytest.mark.parametrize("name", API_FILES)
def test_api_workflow_gives_our_nodes_every_input(name):
    for node in load(name).values():
        if node["class_type"] in LEGACY_CLASSES:
            required = LEGACY_CLASSES[node["class_type"]].INPUT_TYPES()["required"]
            assert set(node["inputs"]) == set(required), node["class_type"]
            for key, value in node["inputs"].items():
                choices = required[key][0]
                if isinstance(choices, list) and key != "encoder_name":  # names of files are the user's
                    assert value in choices


@pytest.mark.parametrize("name", UI_FILES)
def test_ui_workflow_links_match_sockets(name):
    workflow = load(name)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert set(OUTPUT_TYPES) >= {node["type"] for node in nodes.values()}
    assert workflow["last_link_id"] == len(workflow["links"]) and workflow["last_node_id"] == max(nodes)
    for link_id, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        output = nodes[src]["outputs"][src_slot]
        target = nodes[dst]["inputs"][dst_slot]
        assert (
            output["type"] == target["type"] == kind
            and link_id in output["links"]
            and target["link"] == link_id
        )
        assert OUTPUT_TYPES[nodes[src]["type"]][src_slot] == kind


def test_the_controlnet_workflow_feeds_the_sampler_through_the_controlnet():
    prompt = load("faceclip_portrait_controlnet_api.json")
    sampler = next(node for node in prompt.values() if node["class_type"] == "KSampler")
    assert prompt[sampler["inputs"]["positive"][0]]["class_type"] == "ControlNetApplyAdvanced"
    assert sampler["inputs"]["negative"] == [sampler["inputs"]["positive"][0], 1]


def test_the_flux_workflow_uses_the_released_settings_and_a_16_channel_latent():
    from faceclip.pipelines.flux.family import NEGATIVE_PROMPT

    prompt = load("facet5_flux_portrait_api.json")
    sampler = next(node["inputs"] for node in prompt.values() if node["class_type"] == "KSampler")
    source = {name: prompt[sampler[name][0]] for name in ("model", "positive", "negative", "latent_image")}
    assert {name: node["class_type"] for name, node in source.items()} == {
        "model": "UNETLoader",
        "positive": "FaceT5Encode",
        "negative": "FaceT5Negative",
        "latent_image": "EmptySD3LatentImage",
    }
    assert source["model"]["inputs"]["unet_name"] == "facet5_flux_transformer.safetensors"
    assert (sampler["cfg"], sampler["steps"], sampler["scheduler"]) == (3.5, 50, "simple")
    assert source["positive"]["inputs"]["guidance"] == source["negative"]["inputs"]["guidance"] == 1.0
    assert source["negative"]["inputs"]["text"] == NEGATIVE_PROMPT


def test_files_are_what_the_builder_writes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_workflows", WORKFLOWS / "build_workflows.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    rendered = builder.rendered()
    assert sorted(rendered) == sorted(UI_FILES + API_FILES)
    for name, content in rendered.items():
        assert load(name) == content, (
            f"{name} is out of date: run python comfyui/workflows/build_workflows.py"
        )
