"""Each node spelled once: its inputs, outputs and run function.

:mod:`.legacy` turns a :class:`NodeSpec` into a class with ``INPUT_TYPES`` (ComfyUI before the V3 API);
:mod:`.v3` turns it into an ``io.ComfyNode`` (``comfy_api.latest``). Neither needs the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from faceclip.pipelines.sdxl.family import DEFAULTS, NEGATIVE_PROMPT

from . import logic
from .model_folder import encoder_choices

ENCODER_TYPE = "FACECLIP_ENCODER"
CATEGORY = "FaceCLIP"
MAX_RESOLUTION = 16384


@dataclass(frozen=True)
class InputSpec:
    """One input: ``kind`` is a ComfyUI type name (``INT``, ``STRING``, ``IMAGE``, ...) or ``COMBO``."""

    name: str
    kind: str
    options: dict = field(default_factory=dict)
    choices: Callable[[], list[str]] | tuple[str, ...] | None = None

    def choice_list(self) -> list[str]:
        return list(self.choices() if callable(self.choices) else self.choices)


@dataclass(frozen=True)
class NodeSpec:
    node_id: str
    display_name: str
    description: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[tuple[str, str], ...]
    """(ComfyUI type, output name) pairs."""
    run: Callable[..., tuple]


def _size_inputs() -> tuple[InputSpec, ...]:
    """SDXL's size and crop conditioning, named as in ComfyUI's CLIPTextEncodeSDXL; FaceCLIP's portrait size."""
    defaults = {
        "width": DEFAULTS.width,
        "height": DEFAULTS.height,
        "crop_w": 0,
        "crop_h": 0,
        "target_width": DEFAULTS.width,
        "target_height": DEFAULTS.height,
    }
    return tuple(
        InputSpec(key, "INT", {"default": value, "min": 0, "max": MAX_RESOLUTION})
        for key, value in defaults.items()
    )


def _run_loader(encoder_name: str, device: str, dtype: str) -> tuple:
    return (logic.load_encoder(LOADER.display_name, encoder_name, device, dtype),)


def _run_face(image, face_index: int) -> tuple:
    return logic.align_faces(FACE.display_name, image, face_index)


def _run_encode(encoder, face, text: str, **sizes) -> tuple:
    node = ENCODE.display_name
    return (logic.encode(node, _encoder_value(node, encoder), face, text, logic.check_sizes(node, sizes)),)


def _run_negative(encoder, text: str, **sizes) -> tuple:
    node = NEGATIVE.display_name
    return (logic.encode_negative(node, _encoder_value(node, encoder), text, logic.check_sizes(node, sizes)),)


def _encoder_value(node: str, encoder) -> logic.LoadedEncoder:
    if not isinstance(encoder, logic.LoadedEncoder):
        raise logic.NodeInputError(
            node,
            "encoder",
            f"expected a {ENCODER_TYPE}, got {type(encoder).__name__}; "
            "connect the FaceCLIP Encoder Loader node.",
        )
    return encoder


ENCODER_INPUT = InputSpec("encoder", ENCODER_TYPE, {"tooltip": "from the FaceCLIP Encoder Loader"})

LOADER = NodeSpec(
    node_id="FaceCLIPEncoderLoader",
    display_name="FaceCLIP Encoder Loader",
    description="Load the FaceCLIP joint face+text encoder from models/faceclip/ (the released "
    "face_clip_encoder.pt or a 'faceclip convert' folder), or tiny-random weights for trying a workflow.",
    inputs=(
        InputSpec("encoder_name", "COMBO", {"tooltip": "an entry of models/faceclip/"}, encoder_choices),
        InputSpec("device", "COMBO", {"default": "auto"}, logic.DEVICES),
        InputSpec(
            "dtype",
            "COMBO",
            {"default": "auto", "tooltip": "auto: bf16 on a GPU, fp32 on the CPU"},
            logic.DTYPES,
        ),
    ),
    outputs=((ENCODER_TYPE, "encoder"),),
    run=_run_loader,
)

FACE = NodeSpec(
    node_id="FaceCLIPFace",
    display_name="FaceCLIP Face",
    description="Detect the face in each photo and align it to FaceCLIP's 448x448 crop (offline detector).",
    inputs=(
        InputSpec("image", "IMAGE"),
        InputSpec(
            "face_index",
            "INT",
            {
                "default": -1,
                "min": -1,
                "max": 63,
                "tooltip": "-1: the only face; 0: the largest, 1: the next, ...",
            },
        ),
    ),
    outputs=(("IMAGE", "face"), ("INT", "face_index")),
    run=_run_face,
)

ENCODE = NodeSpec(
    node_id="FaceCLIPEncode",
    display_name="FaceCLIP Encode",
    description="Face + prompt -> positive SDXL CONDITIONING (prompt tokens and pooled output, with SDXL's "
    "size and crop conditioning), for ComfyUI's KSampler with the FaceCLIP-SDXL UNet.",
    inputs=(
        ENCODER_INPUT,
        InputSpec("face", "IMAGE", {"tooltip": "the aligned face from FaceCLIP Face"}),
        InputSpec(
            "text",
            "STRING",
            {"multiline": True, "dynamicPrompts": True, "default": "a portrait photo, natural light"},
        ),
        *_size_inputs(),
    ),
    outputs=(("CONDITIONING", "positive"),),
    run=_run_encode,
)

NEGATIVE = NodeSpec(
    node_id="FaceCLIPNegative",
    display_name="FaceCLIP Negative",
    description="The released negative CONDITIONING: the encoder's no-face path on the released negative prompt.",
    inputs=(
        ENCODER_INPUT,
        InputSpec("text", "STRING", {"multiline": True, "default": NEGATIVE_PROMPT}),
        *_size_inputs(),
    ),
    outputs=(("CONDITIONING", "negative"),),
    run=_run_negative,
)

NODES = (LOADER, FACE, ENCODE, NEGATIVE)
"""Every node of the pack, in menu order."""
