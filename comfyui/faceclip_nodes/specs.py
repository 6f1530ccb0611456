"""Each node spelled once: its inputs, outputs and run function.

:mod:`.legacy` turns a :class:`NodeSpec` into a class with ``INPUT_TYPES`` (ComfyUI before the V3 API);
:mod:`.v3` turns it into an ``io.ComfyNode`` (``comfy_api.latest``). Neither needs the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from faceclip.pipelines.flux import family as flux_family
from faceclip.pipelines.sdxl.family import DEFAULTS, NEGATIVE_PROMPT

from . import logic
from .model_folder import encoder_choices

ENCODER_TYPE = "FACECLIP_ENCODER"
FACET5_ENCODER_TYPE = "FACET5_ENCODER"
ENCODER_TYPES = {logic.SDXL: ENCODER_TYPE, logic.FLUX: FACET5_ENCODER_TYPE}
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


GUIDANCE_INPUT = InputSpec(
    "guidance",
    "FLOAT",
    {
        "default": flux_family.DEFAULTS.guidance_scale,
        "min": 0.0,
        "max": 100.0,
        "step": 0.1,
        "tooltip": "FLUX's distilled guidance (1.0 as released; the KSampler's cfg 3.5 is the true CFG)",
    },
)


def _sdxl_extras(node: str, inputs: dict) -> dict:
    return logic.check_sizes(node, inputs)


def _flux_extras(node: str, inputs: dict) -> dict:
    return logic.check_guidance(node, inputs.get("guidance"))


def _encoder_value(node: str, encoder, family: str) -> logic.LoadedEncoder:
    loader = "FaceCLIP Encoder Loader" if family == logic.SDXL else "FaceT5 Encoder Loader"
    if not isinstance(encoder, logic.LoadedEncoder) or encoder.family != family:
        got = encoder.family if isinstance(encoder, logic.LoadedEncoder) else type(encoder).__name__
        raise logic.NodeInputError(
            node, "encoder", f"expected a {ENCODER_TYPES[family]}, got {got}; connect the {loader} node."
        )
    return encoder


def loader_spec(node_id: str, display_name: str, family: str) -> NodeSpec:
    """The encoder loader of ``family``: an entry of models/faceclip/ or the family's tiny-random weights."""

    def run(encoder_name: str, device: str, dtype: str) -> tuple:
        return (logic.load_encoder(display_name, encoder_name, device, dtype, family),)

    tiny = logic.TINY_NAMES[family]
    return NodeSpec(
        node_id=node_id,
        display_name=display_name,
        description=f"Load the {family} joint face+text encoder from models/faceclip/ (a released file or a "
        f"'faceclip convert' folder), or {tiny} weights for trying a workflow.",
        inputs=(
            InputSpec(
                "encoder_name",
                "COMBO",
                {"tooltip": "an entry of models/faceclip/"},
                lambda: encoder_choices(tiny),
            ),
            InputSpec("device", "COMBO", {"default": "auto"}, logic.DEVICES),
            InputSpec(
                "dtype",
                "COMBO",
                {"default": "auto", "tooltip": "auto: bf16 on a GPU, fp32 on the CPU"},
                logic.DTYPES,
            ),
        ),
        outputs=((ENCODER_TYPES[family], "encoder"),),
        run=run,
    )


def encode_spec(node_id: str, display_name: str, family: str, prompt_inputs: tuple, extras) -> NodeSpec:
    """Face + prompt -> positive CONDITIONING of ``family``; ``extras(node, inputs)`` gives its extra entries."""

    def run(encoder, face, text: str, **inputs) -> tuple:
        loaded = _encoder_value(display_name, encoder, family)
        return (logic.encode(display_name, loaded, face, text, extras(display_name, inputs)),)

    return NodeSpec(
        node_id=node_id,
        display_name=display_name,
        description=f"Face + prompt -> positive {family} CONDITIONING for ComfyUI's sampler with the family's "
        "fine-tuned denoiser.",
        inputs=(
            InputSpec("encoder", ENCODER_TYPES[family], {"tooltip": "from the encoder loader"}),
            InputSpec("face", "IMAGE", {"tooltip": "the aligned face from FaceCLIP Face"}),
            InputSpec(
                "text",
                "STRING",
                {"multiline": True, "dynamicPrompts": True, "default": "a portrait photo, natural light"},
            ),
            *prompt_inputs,
        ),
        outputs=(("CONDITIONING", "positive"),),
        run=run,
    )


def negative_spec(node_id: str, display_name: str, family: str, negative: str, prompt_inputs: tuple, extras):
    """The released negative of ``family``: the encoder's no-face path on the released negative prompt."""

    def run(encoder, text: str, **inputs) -> tuple:
        loaded = _encoder_value(display_name, encoder, family)
        return (logic.encode_negative(display_name, loaded, text, extras(display_name, inputs)),)

    return NodeSpec(
        node_id=node_id,
        display_name=display_name,
        description="The released negative CONDITIONING: the encoder's no-face path on the released negative "
        "prompt.",
        inputs=(
            InputSpec("encoder", ENCODER_TYPES[family], {"tooltip": "from the encoder loader"}),
            InputSpec("text", "STRING", {"multiline": True, "default": negative}),
            *prompt_inputs,
        ),
        outputs=(("CONDITIONING", "negative"),),
        run=run,
    )


def _run_face(image, face_index: int) -> tuple:
    return logic.align_faces(FACE.display_name, image, face_index)


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

LOADER = loader_spec("FaceCLIPEncoderLoader", "FaceCLIP Encoder Loader", logic.SDXL)
ENCODE = encode_spec("FaceCLIPEncode", "FaceCLIP Encode", logic.SDXL, _size_inputs(), _sdxl_extras)
NEGATIVE = negative_spec(
    "FaceCLIPNegative", "FaceCLIP Negative", logic.SDXL, NEGATIVE_PROMPT, _size_inputs(), _sdxl_extras
)
FACET5_LOADER = loader_spec("FaceT5EncoderLoader", "FaceT5 Encoder Loader", logic.FLUX)
FACET5_ENCODE = encode_spec("FaceT5Encode", "FaceT5 Encode", logic.FLUX, (GUIDANCE_INPUT,), _flux_extras)
FACET5_NEGATIVE = negative_spec(
    "FaceT5Negative",
    "FaceT5 Negative",
    logic.FLUX,
    flux_family.NEGATIVE_PROMPT,
    (GUIDANCE_INPUT,),
    _flux_extras,
)

NODES = (LOADER, FACE, ENCODE, NEGATIVE, FACET5_LOADER, FACET5_ENCODE, FACET5_NEGATIVE)
"""Every node of the pack, in menu order."""
