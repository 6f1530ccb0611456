"""The node classes without ComfyUI: their schema, the CONDITIONING they make, and every bad input's message."""

from __future__ import annotations

import faceclip_nodes
import pytest
import torch
from faceclip_nodes import legacy, logic, specs
from faceclip_nodes.errors import NodeInputError
from tests.comfyui.comfy_inputs import FACES, SIZES, photo_image

COMFY_TYPES = {
    "INT",
    "FLOAT",
    "STRING",
    "IMAGE",
    "CONDITIONING",
    specs.ENCODER_TYPE,
    specs.FACET5_ENCODER_TYPE,
}


def node(node_id: str):
    return legacy.LEGACY_CLASSES[node_id]()


def test_without_comfyui_the_legacy_mappings_are_exported():
    assert set(faceclip_nodes.NODE_CLASS_MAPPINGS) == {
        "FaceCLIPEncoderLoader",
        "FaceCLIPFace",
        "FaceCLIPEncode",
        "FaceCLIPNegative",
        "FaceT5EncoderLoader",
        "FaceT5Encode",
        "FaceT5Negative",
    }
    assert faceclip_nodes.NODE_DISPLAY_NAME_MAPPINGS["FaceCLIPEncode"] == "FaceCLIP Encode"
    assert callable(faceclip_nodes.comfy_entrypoint)


@pytest.mark.parametrize("node_id", list(legacy.LEGACY_CLASSES))
def test_legacy_schema_is_what_comfyui_reads(node_id):
    cls = legacy.LEGACY_CLASSES[node_id]
    required = cls.INPUT_TYPES()["required"]
    for name, (kind, options) in required.items():
        assert isinstance(options, dict), name
        assert (isinstance(kind, list) and kind) or kind in COMFY_TYPES, (name, kind)
        if "default" in options and isinstance(kind, list):
            assert options["default"] in kind
        if "default" in options and kind == "INT":
            assert options["min"] <= options["default"] <= options["max"]
    assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
    assert set(cls.RETURN_TYPES) <= COMFY_TYPES
    assert callable(getattr(cls(), cls.FUNCTION))
    assert cls.CATEGORY == "FaceCLIP"


def test_encode_inputs_carry_sdxl_size_names_and_faceclip_portrait_defaults():
    required = legacy.LEGACY_CLASSES["FaceCLIPEncode"].INPUT_TYPES()["required"]
    assert list(required)[3:] == list(SIZES)
    assert {key: required[key][1]["default"] for key in SIZES} == SIZES


def test_face_node_aligns_real_photos():
    face, index = node("FaceCLIPFace").run(image=photo_image("astronaut.png"), face_index=-1)
    assert face.shape == (1, 448, 448, 3) and face.dtype == torch.float32
    assert index == 0 and face.min() >= 0 and face.max() <= 1 and face.std() > 0.05


def test_face_node_takes_a_batch_and_the_face_index():
    batch = torch.cat([photo_image("lfw_000.png"), photo_image("lfw_001.png")])
    face, _ = node("FaceCLIPFace").run(image=batch, face_index=-1)
    assert face.shape == (2, 448, 448, 3) and not torch.equal(face[0], face[1])
    two = photo_image("astronaut.png", "lfw_001.png", size=256)
    second, index = node("FaceCLIPFace").run(image=two, face_index=1)
    assert index == 1 and second.shape == (1, 448, 448, 3)


def test_conditioning_equals_the_pipeline_encode_prompt(tiny_encoder):
    from faceclip.registry import load_pipeline

    pipe = load_pipeline("tiny-random")
    prompt = "a woman in a garden"
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompt, face_image=str(FACES / "astronaut.png"), device=torch.device("cpu")
    )
    face, _ = node("FaceCLIPFace").run(image=photo_image("astronaut.png"), face_index=-1)
    [[cond, extras]] = node("FaceCLIPEncode").run(encoder=tiny_encoder, face=face, text=prompt, **SIZES)[0]
    torch.testing.assert_close(cond, embeds, rtol=0, atol=1e-6)
    torch.testing.assert_close(extras["pooled_output"], pooled, rtol=0, atol=1e-6)
    assert {key: extras[key] for key in SIZES} == SIZES and set(extras) == {"pooled_output", *SIZES}
    [[neg, neg_extras]] = node("FaceCLIPNegative").run(
        encoder=tiny_encoder, text=specs.NEGATIVE_PROMPT, **SIZES
    )[0]
    torch.testing.assert_close(neg, negative, rtol=0, atol=1e-6)
    torch.testing.assert_close(neg_extras["pooled_output"], negative_pooled, rtol=0, atol=1e-6)


def test_conditioning_has_sdxl_ranks_and_one_row_per_face(tiny_encoder):
    faces = torch.rand(3, 448, 448, 3)
    [[cond, extras]] = node("FaceCLIPEncode").run(encoder=tiny_encoder, face=faces, text="x", **SIZES)[0]
    encoder = tiny_encoder.encoder
    assert cond.shape == (3, 77, encoder.prompt_embeds_dim) and cond.dtype == torch.float32
    assert extras["pooled_output"].shape == (3, encoder.pooled_dim)


def test_facet5_conditioning_equals_the_flux_pipeline_encode_prompt():
    from faceclip.pipelines.flux.family import NEGATIVE_PROMPT as FLUX_NEGATIVE
    from faceclip.registry import load_pipeline

    pipe = load_pipeline("tiny-random-flux")
    prompt = "a man on a beach"
    embeds, pooled, _ = pipe.encode_prompt(
        prompt, face_image=str(FACES / "lfw_000.png"), device=torch.device("cpu")
    )
    negative, negative_pooled = pipe.encode_negative_prompt([FLUX_NEGATIVE], torch.device("cpu"))
    (loaded,) = node("FaceT5EncoderLoader").run(encoder_name="tiny-random-flux", device="cpu", dtype="fp32")
    face, _ = node("FaceCLIPFace").run(image=photo_image("lfw_000.png"), face_index=-1)
    [[cond, extras]] = node("FaceT5Encode").run(encoder=loaded, face=face, text=prompt, guidance=1.0)[0]
    torch.testing.assert_close(cond, embeds, rtol=0, atol=1e-6)
    torch.testing.assert_close(extras["pooled_output"], pooled, rtol=0, atol=1e-6)
    assert set(extras) == {"pooled_output", "guidance"} and extras["guidance"] == 1.0
    [[neg, neg_extras]] = node("FaceT5Negative").run(encoder=loaded, text=FLUX_NEGATIVE, guidance=1.0)[0]
    torch.testing.assert_close(neg, negative, rtol=0, atol=1e-6)
    torch.testing.assert_close(neg_extras["pooled_output"], negative_pooled, rtol=0, atol=1e-6)
    message = error_of("FaceCLIPNegative", encoder=loaded, text="x", **SIZES)
    assert message == (
        "FaceCLIP Negative: input 'encoder': expected a FACECLIP_ENCODER, got facet5-flux; connect the "
        "FaceCLIP Encoder Loader node."
    )
    message = error_of("FaceT5Negative", encoder=loaded, text="x", guidance=-1)
    assert (
        message == "FaceT5 Negative: input 'guidance': -1 is not a number >= 0 (the released model uses 1.0)."
    )


def test_negative_default_is_the_released_negative_prompt():
    required = legacy.LEGACY_CLASSES["FaceCLIPNegative"].INPUT_TYPES()["required"]
    assert required["text"][1]["default"] == specs.NEGATIVE_PROMPT


def test_loader_lists_the_model_folder_and_loads_a_saved_encoder(tmp_path, monkeypatch, tiny_encoder):
    tiny_encoder.encoder.save_pretrained(tmp_path / "my-encoder")
    (tmp_path / "notes.txt").write_text("not a model")
    from faceclip_nodes.model_folder import encoder_choices, find_encoder

    monkeypatch.setattr(logic, "find_encoder", lambda name: find_encoder(name, [tmp_path]))
    assert encoder_choices("tiny-random", [tmp_path]) == ["my-encoder", "tiny-random"]
    (loaded,) = node("FaceCLIPEncoderLoader").run(encoder_name="my-encoder", device="cpu", dtype="fp32")
    assert loaded.name == "my-encoder" and loaded.device == torch.device("cpu")


def test_model_folder_is_registered_with_folder_paths(tmp_path, monkeypatch):
    import types

    from faceclip_nodes import model_folder

    registered = {}
    fake = types.SimpleNamespace(
        models_dir=str(tmp_path),
        folder_names_and_paths=registered,
        add_model_folder_path=lambda name, path: registered.setdefault(name, ([], set()))[0].append(path),
    )
    monkeypatch.setitem(__import__("sys").modules, "folder_paths", fake)
    model_folder.register_model_folder()
    model_folder.register_model_folder()  # once only
    assert registered == {"faceclip": ([str(tmp_path / "faceclip")], set())}
    (tmp_path / "faceclip").mkdir()
    (tmp_path / "faceclip" / "face_clip_encoder.pt").write_bytes(b"")
    assert model_folder.encoder_choices("tiny-random-flux") == ["face_clip_encoder.pt", "tiny-random-flux"]


# ------------------------------------------------------------------ bad inputs


def error_of(node_id: str, **inputs) -> str:
    with pytest.raises(NodeInputError) as info:
        node(node_id).run(**inputs)
    return str(info.value)


def test_photo_without_a_face():
    message = error_of("FaceCLIPFace", image=torch.full((1, 96, 96, 3), 0.5), face_index=-1)
    assert message.startswith("FaceCLIP Face: input 'image': photo 1 of 1: No face found")
    assert "crop the photo closer" in message


def test_photo_with_several_faces_and_no_index():
    message = error_of(
        "FaceCLIPFace", image=photo_image("astronaut.png", "lfw_001.png", size=256), face_index=-1
    )
    assert message == (
        "FaceCLIP Face: input 'face_index': photo 1 of 1 shows 2 faces; set face_index to the one to use "
        "(0 = the largest, up to 1), or crop the photo to one person."
    )


def test_face_index_beyond_the_faces_found():
    message = error_of("FaceCLIPFace", image=photo_image("astronaut.png"), face_index=3)
    assert "input 'image'" in message and "Face index 3 is out of range: only 1 face(s)" in message


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (torch.rand(96, 96, 3), "expected an IMAGE of shape [batch, height, width, 3], got [96, 96, 3]"),
        (torch.rand(1, 96, 96, 1), "got [1, 96, 96, 1]"),
        (torch.rand(1, 4, 96, 96), "got [1, 4, 96, 96]"),
        (torch.rand(0, 96, 96, 3), "got [0, 96, 96, 3]"),
        (
            torch.randint(0, 255, (1, 96, 96, 3), dtype=torch.uint8),
            "expected float values in [0, 1], got torch.uint8",
        ),
        (torch.rand(1, 96, 96, 3) * 255, "values must lie in [0, 1]"),
        ("photo.png", "expected an IMAGE tensor, got str"),
    ],
)
def test_wrong_image(image, expected):
    message = error_of("FaceCLIPFace", image=image, face_index=-1)
    assert message.startswith("FaceCLIP Face: input 'image': ") and expected in message


def test_negative_face_index_below_minus_one():
    message = error_of("FaceCLIPFace", image=photo_image("astronaut.png"), face_index=-2)
    assert message == "FaceCLIP Face: input 'face_index': -2 is not -1 (the only face) or a face number >= 0."


def test_encode_needs_a_square_aligned_face(tiny_encoder):
    message = error_of(
        "FaceCLIPEncode", encoder=tiny_encoder, face=torch.rand(1, 64, 96, 3), text="x", **SIZES
    )
    assert message == (
        "FaceCLIP Encode: input 'face': expected a square aligned face, got 96x64; connect the 'face' output "
        "of the FaceCLIP Face node."
    )


def test_encode_needs_the_encoder_value():
    message = error_of(
        "FaceCLIPEncode", encoder="tiny-random", face=torch.rand(1, 8, 8, 3), text="x", **SIZES
    )
    assert message.startswith("FaceCLIP Encode: input 'encoder': expected a FACECLIP_ENCODER, got str")


def test_size_input_must_be_a_whole_number(tiny_encoder):
    message = error_of("FaceCLIPNegative", encoder=tiny_encoder, text="x", **{**SIZES, "width": 10.5})
    assert message == "FaceCLIP Negative: input 'width': 10.5 is not a whole number of pixels >= 0."


def test_text_must_be_text(tiny_encoder):
    message = error_of("FaceCLIPNegative", encoder=tiny_encoder, text=None, **SIZES)
    assert message == "FaceCLIP Negative: input 'text': expected text, got NoneType."


def test_missing_model_file():
    message = error_of(
        "FaceCLIPEncoderLoader", encoder_name="face_clip_encoder.pt", device="cpu", dtype="fp32"
    )
    assert message.startswith(
        "FaceCLIP Encoder Loader: input 'encoder_name': 'face_clip_encoder.pt' is not in "
        "ComfyUI/models/faceclip/."
    )
    assert "tiny-random" in message


def test_damaged_model_file(tmp_path, monkeypatch):
    damaged = tmp_path / "face_clip_encoder.pt"
    damaged.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(logic, "find_encoder", lambda name: damaged)
    message = error_of("FaceCLIPEncoderLoader", encoder_name=damaged.name, device="cpu", dtype="fp32")
    assert message.startswith(
        "FaceCLIP Encoder Loader: input 'encoder_name': cannot load 'face_clip_encoder.pt': "
    )


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({"device": "tpu"}, "input 'device': 'tpu' is not one of auto, cpu, cuda."),
        ({"dtype": "int8"}, "input 'dtype': 'int8' is not one of auto, fp32, bf16, fp16."),
    ],
)
def test_bad_device_or_dtype(inputs, expected):
    message = error_of(
        "FaceCLIPEncoderLoader", **{"encoder_name": "tiny-random", "device": "cpu", "dtype": "fp32", **inputs}
    )
    assert message == f"FaceCLIP Encoder Loader: {expected}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a CUDA device")
def test_cuda_on_a_machine_without_one():
    message = error_of("FaceCLIPEncoderLoader", encoder_name="tiny-random", device="cuda", dtype="fp32")
    assert (
        message
        == "FaceCLIP Encoder Loader: input 'device': this machine has no cuda device; pick auto or cpu."
    )


def test_facet5_folder_without_its_t5_tokenizer(tmp_path, monkeypatch):
    from faceclip_nodes.model_folder import find_encoder

    from faceclip.models.facet5_encoder import create_facet5_encoder

    create_facet5_encoder("facet5-tiny", seed=0).save_pretrained(tmp_path / "facet5")
    monkeypatch.setattr(logic, "find_encoder", lambda name: find_encoder(name, [tmp_path]))
    message = error_of("FaceT5EncoderLoader", encoder_name="facet5", device="cpu", dtype="fp32")
    assert message == (
        "FaceT5 Encoder Loader: input 'encoder_name': no T5 tokenizer beside 'facet5': copy the released "
        f"model/tokenizer folder to {tmp_path / 'tokenizer'}."
    )
