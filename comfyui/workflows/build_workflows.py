"""Write the example workflows of this folder, in ComfyUI's UI format and its API format, from one graph each.

    python comfyui/workflows/build_workflows.py      # rewrites every *.json here

Each graph lists its nodes with their widget values and links; the socket names and types of ComfyUI's own
nodes used here are spelled in BUILT_IN (inputs linked by socket, widgets in the order the UI stores them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from faceclip_nodes.specs import NODES  # noqa: E402

BUILT_IN = {
    # type: (linked inputs [(name, type)], widgets [names], outputs [(name, type)])
    "LoadImage": ([], ["image", "upload"], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "PreviewImage": ([("images", "IMAGE")], [], []),
    "UNETLoader": ([], ["unet_name", "weight_dtype"], [("MODEL", "MODEL")]),
    "VAELoader": ([], ["vae_name"], [("VAE", "VAE")]),
    "EmptyLatentImage": ([], ["width", "height", "batch_size"], [("LATENT", "LATENT")]),
    "EmptySD3LatentImage": ([], ["width", "height", "batch_size"], [("LATENT", "LATENT")]),
    "KSampler": (
        [
            ("model", "MODEL"),
            ("positive", "CONDITIONING"),
            ("negative", "CONDITIONING"),
            ("latent_image", "LATENT"),
        ],
        ["seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"],
        [("LATENT", "LATENT")],
    ),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [], [("IMAGE", "IMAGE")]),
    "SaveImage": ([("images", "IMAGE")], ["filename_prefix"], []),
    "ControlNetLoader": ([], ["control_net_name"], [("CONTROL_NET", "CONTROL_NET")]),
    "Canny": ([("image", "IMAGE")], ["low_threshold", "high_threshold"], [("IMAGE", "IMAGE")]),
    "ControlNetApplyAdvanced": (
        [
            ("positive", "CONDITIONING"),
            ("negative", "CONDITIONING"),
            ("control_net", "CONTROL_NET"),
            ("image", "IMAGE"),
            ("vae", "VAE"),
        ],
        ["strength", "start_percent", "end_percent"],
        [("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
    ),
}
WIDGET_KINDS = ("INT", "FLOAT", "STRING", "COMBO")
UI_ONLY_WIDGETS = {"upload", "control_after_generate"}
"""Widgets the UI stores but the API format leaves out."""


def signatures() -> dict[str, tuple[list, list, list]]:
    """BUILT_IN plus this pack's nodes (from their specs)."""
    table = dict(BUILT_IN)
    for spec in NODES:
        linked = [(i.name, i.kind) for i in spec.inputs if i.kind not in WIDGET_KINDS]
        widgets = [i.name for i in spec.inputs if i.kind in WIDGET_KINDS]
        table[spec.node_id] = (linked, widgets, [(name, kind) for kind, name in spec.outputs])
    return table


SIZES = {"width": 864, "height": 1152, "crop_w": 0, "crop_h": 0, "target_width": 864, "target_height": 1152}
PROMPT = "a portrait photo of a person in a sunlit garden, 85mm, natural light"


class Family(NamedTuple):
    """What a family's portrait workflow names: its nodes, files, latent, prompt inputs and sampler settings."""

    encoder_loader: str
    encoder_file: str
    encode: str
    negative: str
    unet_file: str
    vae_file: str
    latent: str
    prompt_inputs: dict
    steps: int
    cfg: float
    scheduler: str
    prefix: str


SDXL = Family(
    "FaceCLIPEncoderLoader", "face_clip_encoder.pt", "FaceCLIPEncode", "FaceCLIPNegative",
    "faceclip_sdxl_unet.safetensors", "sdxl_vae.safetensors", "EmptyLatentImage", SIZES, 30, 5.0, "normal",
    "faceclip",
)  # fmt: skip

FLUX_PROMPT_INPUTS = {"guidance": 1.0}
"""The released distilled guidance; the true CFG 3.5 is the KSampler's ``cfg`` (with the negative)."""

FLUX = Family(
    "FaceT5EncoderLoader", "face_t5_encoder.pt", "FaceT5Encode", "FaceT5Negative",
    "facet5_flux_transformer.safetensors", "ae.safetensors", "EmptySD3LatentImage", FLUX_PROMPT_INPUTS, 50, 3.5,
    "simple", "facet5_flux",
)  # fmt: skip
"""FaceT5-FLUX: the converted transformer from Load Diffusion Model, a 16-channel latent, 50 Euler steps at true
CFG 3.5 (the released settings)."""


def conditioning_nodes(family: Family) -> list[dict]:
    """Nodes 1-9: photo -> aligned face (previewed), the encoder, the denoiser, the VAE, the latent, and the
    positive (8) and negative (9) conditioning."""
    return [
        {"id": 1, "type": "LoadImage", "widgets": {"image": "face.png", "upload": "image"}},
        {"id": 2, "type": "FaceCLIPFace", "widgets": {"face_index": -1}, "links": {"image": (1, 0)}},
        {"id": 3, "type": "PreviewImage", "links": {"images": (2, 0)}},
        {
            "id": 4,
            "type": family.encoder_loader,
            "widgets": {"encoder_name": family.encoder_file, "device": "auto", "dtype": "auto"},
        },
        {
            "id": 5,
            "type": "UNETLoader",
            "widgets": {"unet_name": family.unet_file, "weight_dtype": "default"},
        },
        {"id": 6, "type": "VAELoader", "widgets": {"vae_name": family.vae_file}},
        {"id": 7, "type": family.latent, "widgets": {"width": 864, "height": 1152, "batch_size": 1}},
        {
            "id": 8,
            "type": family.encode,
            "widgets": {"text": PROMPT, **family.prompt_inputs},
            "links": {"encoder": (4, 0), "face": (2, 0)},
        },
        {
            "id": 9,
            "type": family.negative,
            "widgets": {"text": None, **family.prompt_inputs},
            "links": {"encoder": (4, 0)},
        },
    ]


def sampling_nodes(family: Family, positive: tuple, negative: tuple) -> list[dict]:
    """Nodes 10-12: KSampler with the family's settings, VAE decode, save."""
    sampler = {
        "seed": 42, "control_after_generate": "fixed", "steps": family.steps, "cfg": family.cfg,
        "sampler_name": "euler", "scheduler": family.scheduler, "denoise": 1.0,
    }  # fmt: skip
    return [
        {
            "id": 10,
            "type": "KSampler",
            "widgets": sampler,
            "links": {"model": (5, 0), "positive": positive, "negative": negative, "latent_image": (7, 0)},
        },
        {"id": 11, "type": "VAEDecode", "links": {"samples": (10, 0), "vae": (6, 0)}},
        {
            "id": 12,
            "type": "SaveImage",
            "widgets": {"filename_prefix": family.prefix},
            "links": {"images": (11, 0)},
        },
    ]


def controlnet_nodes(positive: tuple, negative: tuple) -> list[dict]:
    """Nodes 13-16: a Canny edge map of a pose photo, applied to the conditioning (outputs (16, 0), (16, 1))."""
    return [
        {"id": 13, "type": "LoadImage", "widgets": {"image": "pose.png", "upload": "image"}},
        {
            "id": 14,
            "type": "Canny",
            "widgets": {"low_threshold": 0.4, "high_threshold": 0.8},
            "links": {"image": (13, 0)},
        },
        {
            "id": 15,
            "type": "ControlNetLoader",
            "widgets": {"control_net_name": "controlnet-canny-sdxl-1.0.safetensors"},
        },
        {
            "id": 16,
            "type": "ControlNetApplyAdvanced",
            "widgets": {"strength": 0.6, "start_percent": 0.0, "end_percent": 0.8},
            "links": {
                "positive": positive,
                "negative": negative,
                "control_net": (15, 0),
                "image": (14, 0),
                "vae": (6, 0),
            },
        },
    ]


def portrait_graph(controlnet: bool) -> list[dict]:
    """Photo + prompt -> portrait; with ``controlnet``, a Canny edge map of a pose photo also steers it."""
    positive, negative = (8, 0), (9, 0)
    graph = conditioning_nodes(SDXL)
    if controlnet:
        graph += controlnet_nodes(positive, negative)
        positive, negative = (16, 0), (16, 1)
    return graph + sampling_nodes(SDXL, positive, negative)


def flux_portrait_graph() -> list[dict]:
    """Photo + prompt -> portrait with FaceT5-FLUX (see :data:`FLUX`)."""
    return conditioning_nodes(FLUX) + sampling_nodes(FLUX, (8, 0), (9, 0))


def _widgets(node: dict) -> dict:
    """The node's widget values; a ``None`` text is the node's own default (the released negative prompt)."""
    widgets = dict(node.get("widgets", {}))
    if "text" in widgets and widgets["text"] is None:
        spec = next(spec for spec in NODES if spec.node_id == node["type"])
        widgets["text"] = next(i.options["default"] for i in spec.inputs if i.name == "text")
    return widgets


def api_format(graph: list[dict]) -> dict:
    """``{id: {"class_type", "inputs", "_meta"}}``, links as ``[source id, output index]``."""
    prompt = {}
    for node in graph:
        inputs = {k: v for k, v in _widgets(node).items() if k not in UI_ONLY_WIDGETS}
        inputs.update({name: [str(src), slot] for name, (src, slot) in node.get("links", {}).items()})
        prompt[str(node["id"])] = {
            "class_type": node["type"],
            "inputs": inputs,
            "_meta": {"title": node["type"]},
        }
    return prompt


def ui_format(graph: list[dict]) -> dict:
    """The workflow as the ComfyUI editor saves it (nodes, links, widget values in order)."""
    table = signatures()
    links, nodes = [], []
    for order, node in enumerate(graph):
        linked, widget_names, outputs = table[node["type"]]
        widgets = _widgets(node)
        inputs = []
        for name, kind in linked:
            source = node.get("links", {}).get(name)
            link_id = None
            if source is not None:
                link_id = len(links) + 1
                links.append([link_id, source[0], source[1], node["id"], len(inputs), kind])
            inputs.append({"name": name, "type": kind, "link": link_id})
        nodes.append(
            {
                "id": node["id"],
                "type": node["type"],
                "pos": [40 + 340 * (order % 4), 60 + 320 * (order // 4)],
                "size": [315, 130],
                "flags": {},
                "order": order,
                "mode": 0,
                "inputs": inputs,
                "outputs": [
                    {"name": name, "type": kind, "links": [], "slot_index": slot}
                    for slot, (name, kind) in enumerate(outputs)
                ],
                "properties": {"Node name for S&R": node["type"]},
                "widgets_values": [widgets[name] for name in widget_names],
            }
        )
    for link_id, src, slot, *_ in links:
        next(n for n in nodes if n["id"] == src)["outputs"][slot]["links"].append(link_id)
    return {
        "last_node_id": max(node["id"] for node in graph),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
    }


WORKFLOWS = {
    "faceclip_portrait": lambda: portrait_graph(controlnet=False),
    "faceclip_portrait_controlnet": lambda: portrait_graph(controlnet=True),
    "facet5_flux_portrait": flux_portrait_graph,
}
"""File stem -> the graph it holds."""


def rendered() -> dict[str, dict]:
    """File name -> JSON content of every example workflow."""
    files = {}
    for name, build in WORKFLOWS.items():
        graph = build()
        files[f"{name}.json"] = ui_format(graph)
        files[f"{name}_api.json"] = api_format(graph)
    return files


def main() -> None:
    for name, content in rendered().items():
        (HERE / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
