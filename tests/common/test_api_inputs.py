"""Bad input to the Python API: a ValueError/TypeError naming the argument and what was expected, never a raw
error from torch, numpy or OpenCV. Also: small faces warn, fp16 on the CPU is said once, the CLIP download
command fetches everything, and an unreachable hub fails fast.

Models are the tiny random ones, built once per module; fixtures are made at test time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

FACES = Path(__file__).parents[1] / "data" / "faces"
PHOTO = Path(__file__).parents[1] / "data" / "pipelines" / "astronaut_192.jpg"
NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def faceclip_encoder():
    from faceclip.models import create_encoder

    return create_encoder("faceclip-tiny", seed=0)


@pytest.fixture(scope="module")
def facet5_encoder():
    from faceclip.models.facet5_encoder import create_facet5_encoder

    return create_facet5_encoder("facet5-tiny", seed=0)


@pytest.fixture(scope="module")
def pipe():
    import faceclip

    return faceclip.load_pipeline("tiny-random")


@pytest.fixture(scope="module")
def embeddings(pipe):
    """(prompt_embeds, negative, pooled, negative_pooled) of two prompts, 2 rows each."""
    return pipe.encode_prompt(["a", "b"], torch.rand(1, 3, 32, 32), do_classifier_free_guidance=True)


# ------------------------------------------------------------------------------------------------ encoders

FACE = torch.rand(1, 3, 28, 28)
ENCODER_CASES = [
    (
        dict(face_images=FACE.to(torch.uint8)),
        TypeError,
        r"face_images: expected a float tensor .* torch\.uint8",
    ),
    (dict(face_images=FACE.long()), TypeError, r"face_images: expected a float tensor .* torch\.int64"),
    (
        dict(face_images=FACE.numpy()),
        TypeError,
        r"face_images: expected a \(B, 3, H, W\) float tensor.*ndarray",
    ),
    (dict(face_images=FACE[0]), ValueError, r"face_images: expected shape \(B, 3, H, W\), got \(3, 28, 28\)"),
    (dict(face_images=FACE[:, :1]), ValueError, r"face_images: expected shape \(B, 3, H, W\)"),
    (dict(face_images=FACE.expand(2, -1, -1, -1)), ValueError, "face_images: 2 faces for 1 prompts"),
    (dict(face_images=torch.rand(0, 3, 28, 28)), ValueError, "face_images: 0 faces for 1 prompts"),
    (
        dict(face_images=torch.rand(1, 3, 0, 0)),
        ValueError,
        r"face_images: empty images of shape \(1, 3, 0, 0\)",
    ),
    (dict(prompts=[]), ValueError, "prompts: the batch is empty"),
    (dict(prompts=5), TypeError, "prompts: expected a str or a list of str, got int"),
    (dict(prompts=None), TypeError, "prompts: expected a str or a list of str, got NoneType"),
    (dict(prompts=["a", 1]), TypeError, "prompts: expected a str or a list of str"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), ENCODER_CASES)
def test_faceclip_encoder_refuses_bad_inputs_by_name(faceclip_encoder, kwargs, error, match):
    with pytest.raises(error, match=match):
        faceclip_encoder(**{"face_images": FACE, "prompts": ["a"], **kwargs})


@pytest.mark.parametrize(
    ("has_face", "error", "match"),
    [
        ("yes", TypeError, "has_face: expected a bool tensor or list of 1 bools, got str"),
        ([1], ValueError, r"has_face: expected a bool tensor of shape \(1,\), got torch\.int64"),
        ([True, False], ValueError, r"has_face: .*shape \(1,\)"),
    ],
)
def test_faceclip_encoder_refuses_bad_has_face(faceclip_encoder, has_face, error, match):
    with pytest.raises(error, match=match):
        faceclip_encoder(face_images=FACE, prompts=["a"], has_face=has_face)


T5_IDS = torch.zeros(1, 16, dtype=torch.long)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        *ENCODER_CASES,
        (dict(t5_input_ids=T5_IDS.expand(2, -1)), ValueError, "t5_input_ids: 2 rows for 1 prompts"),
        (dict(t5_input_ids=T5_IDS[:0]), ValueError, "t5_input_ids: 0 rows for 1 prompts"),
        (dict(t5_input_ids=T5_IDS[0]), ValueError, r"t5_input_ids: expected shape \(1, 16\), got \(16,\)"),
        (dict(t5_input_ids=T5_IDS.bool()), TypeError, r"t5_input_ids: expected an integer .*torch\.bool"),
        (dict(t5_input_ids=T5_IDS.float()), TypeError, r"t5_input_ids: expected an integer .*torch\.float32"),
        (dict(t5_input_ids=T5_IDS.numpy()), TypeError, "t5_input_ids: expected an integer .*ndarray"),
        (dict(t5_input_ids=T5_IDS - 1), ValueError, r"t5_input_ids: ids must lie in \[0, "),
    ],
)
def test_facet5_encoder_refuses_bad_inputs_by_name(facet5_encoder, kwargs, error, match):
    with pytest.raises(error, match=match):
        facet5_encoder(**{"face_images": FACE, "prompts": ["a"], "t5_input_ids": T5_IDS, **kwargs})


def test_float64_faces_give_the_float32_result(faceclip_encoder, facet5_encoder):
    """float64 is not an error: the faces are converted, and the embeddings match float32 faces'."""
    single = faceclip_encoder(face_images=FACE, prompts=["a"]).prompt_embeds
    double = faceclip_encoder(face_images=FACE.double(), prompts=["a"]).prompt_embeds
    torch.testing.assert_close(double, single)
    single = facet5_encoder(face_images=FACE, prompts=["a"], t5_input_ids=T5_IDS).prompt_embeds
    double = facet5_encoder(face_images=FACE.double(), prompts=["a"], t5_input_ids=T5_IDS).prompt_embeds
    torch.testing.assert_close(double, single)


# ----------------------------------------------------------------------------------------------- pipeline


def _bad_embeddings(embeds, neg, pooled, neg_pooled) -> dict[str, tuple[dict, type, str]]:
    """name -> (call kwargs, error, match) for precomputed embeddings that must be refused."""
    both = dict(prompt_embeds=embeds, pooled_prompt_embeds=pooled)
    cases = [
        ("nan prompt_embeds", {**both, "prompt_embeds": embeds * NAN}, ValueError,
         "prompt_embeds: 12320 of 12320 values are NaN or infinite"),
        ("one inf in pooled", {**both, "pooled_prompt_embeds": pooled.index_fill(1, torch.tensor([0]), INF)},
         ValueError, "pooled_prompt_embeds: 2 of 96 values are NaN or infinite"),
        ("nan negative", {**both, "negative_prompt_embeds": neg * NAN, "negative_pooled_prompt_embeds": neg_pooled},
         ValueError, "negative_prompt_embeds: .* NaN or infinite"),
        ("inf negative pooled", {**both, "negative_prompt_embeds": neg,
                                 "negative_pooled_prompt_embeds": neg_pooled * INF},
         ValueError, "negative_pooled_prompt_embeds: .* NaN or infinite"),
        ("pooled rows", {**both, "pooled_prompt_embeds": pooled[:1]}, ValueError,
         "pooled_prompt_embeds with the same batch size"),
        ("pooled 3-d", {**both, "pooled_prompt_embeds": pooled[:, None]}, ValueError,
         r"pooled_prompt_embeds: expected shape \(B, 48\)"),
        ("pooled width", {**both, "pooled_prompt_embeds": pooled[:, :3]}, ValueError,
         r"pooled_prompt_embeds: expected shape \(B, 48\) .* got \(2, 3\)"),
        ("empty batch", {"prompt_embeds": embeds[:0], "pooled_prompt_embeds": pooled[:0]}, ValueError,
         r"prompt_embeds: expected shape \(B, 77, 80\) with B >= 1"),
        ("numpy", {**both, "prompt_embeds": embeds.numpy()}, TypeError,
         "prompt_embeds: expected a float tensor .*ndarray"),
        ("int", {**both, "prompt_embeds": embeds.long()}, TypeError, r"prompt_embeds: .*dtype torch\.int64"),
    ]  # fmt: skip
    return {name: rest for name, *rest in cases}


BAD_EMBEDDINGS = ["nan prompt_embeds", "one inf in pooled", "nan negative", "inf negative pooled", "pooled rows",
                  "pooled 3-d", "pooled width", "empty batch", "numpy", "int"]  # fmt: skip


@pytest.mark.parametrize("case", BAD_EMBEDDINGS)
def test_pipeline_refuses_bad_embeddings_in_check_inputs_and_encode_prompt(pipe, embeddings, case):
    kwargs, error, match = _bad_embeddings(*embeddings)[case]
    with pytest.raises(error, match=match):
        pipe.check_inputs(None, None, 64, 64, **kwargs)
    with pytest.raises(error, match=match):
        pipe.encode_prompt(None, **kwargs)


def test_negative_embeddings_must_have_one_row_per_prompt(pipe, embeddings):
    _, neg, _, neg_pooled = embeddings
    with pytest.raises(ValueError, match="negative_prompt_embeds: 1 rows for 2 prompts"):
        pipe.encode_prompt(
            ["a", "b"], torch.rand(3, 32, 32), negative_prompt_embeds=neg[:1],
            negative_pooled_prompt_embeds=neg_pooled[:1],
        )  # fmt: skip


@pytest.mark.parametrize(
    ("face", "error", "match"),
    [
        (
            torch.rand(1, 3, 32, 32) * 255,
            ValueError,
            r"face_image: tensor values must be finite and lie in \[0, 1\]",
        ),
        (torch.full((3, 32, 32), NAN), ValueError, r"face_image: tensor values must be finite"),
        (torch.zeros(1, 3, 32, 32) - 1, ValueError, r"face_image: .*got \[-1\.000, -1\.000\]"),
        (
            torch.zeros(1, 3, 32, 32, dtype=torch.uint8),
            ValueError,
            r"face_image: expected a float tensor .*uint8",
        ),
        (torch.rand(2, 3, 32, 32), ValueError, r"face_image: an aligned face tensor must have shape"),
        (torch.rand(1, 3, 0, 0), ValueError, r"face_image: empty face tensor of shape \(1, 3, 0, 0\)"),
        (5, TypeError, "face_image: expected a photo .* got int"),
        (np.zeros((0, 0, 3), np.uint8), ValueError, r"Unsupported image array shape \(0, 0, 3\)"),
        (np.full((32, 32, 3), 255.0), ValueError, "float arrays must be in \\[0, 1\\]"),
    ],
)
def test_pipeline_refuses_bad_faces(pipe, face, error, match):
    with pytest.raises(error, match=match):
        pipe.encode_prompt("a", face_image=face, do_classifier_free_guidance=False)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(prompt=3), TypeError, "prompt: expected a str or a list of str, got int"),
        (dict(prompt=[]), ValueError, "prompt: the batch is empty"),
        (dict(num_images_per_prompt=0), ValueError, "num_images_per_prompt must be a whole number >= 1"),
        (
            dict(negative_prompt=["x"], prompt=["a", "b"]),
            ValueError,
            "negative_prompt: 1 entries for 2 prompts",
        ),
    ],
)
def test_encode_prompt_refuses_bad_prompts(pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        pipe.encode_prompt(**{"prompt": "a", "face_image": torch.rand(3, 32, 32), **kwargs})


# ------------------------------------------------------------------------------------------------- faces


@pytest.fixture(scope="module")
def analyzer():
    from faceclip.face import FaceAnalyzer

    return FaceAnalyzer(backend="opencv")


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (None, TypeError, "`source` must be a path, a PIL.Image.Image or a numpy array .* got NoneType"),
        (torch.rand(3, 8, 8), TypeError, r"got Tensor; convert a \(3, H, W\) tensor .*permute"),
        ([1, 2], TypeError, "got list"),
        (np.zeros((0, 0, 3), np.uint8), ValueError, r"Unsupported image array shape \(0, 0, 3\)"),
        (np.zeros((1, 8, 8, 3), np.uint8), ValueError, r"Unsupported image array shape \(1, 8, 8, 3\)"),
        (np.zeros((8, 8), np.complex64), ValueError, "Unsupported image array dtype complex64"),
        (np.full((8, 8, 3), NAN), ValueError, "NaN or infinite"),
        (Image.new("RGB", (0, 0)), ValueError, r"image: the PIL image is empty \(0x0 pixels\)"),
    ],
)
def test_face_analyzer_refuses_bad_images(analyzer, image, error, match):
    for method in (analyzer.detect, analyzer.align, analyzer.embed):
        with pytest.raises(error, match=match):
            method(image)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(size=0), ValueError, "size: expected a whole number >= 1, got 0"),
        (dict(size="448"), TypeError, "size: expected a whole number, got str"),
        (dict(face_index="0"), TypeError, "face_index: expected a whole number, got str"),
        (dict(face_index=0.5), TypeError, "face_index: expected a whole number, got float"),
    ],
)
def test_face_analyzer_align_refuses_bad_arguments_before_detecting(analyzer, kwargs, error, match):
    with pytest.raises(error, match=match):
        analyzer.align(FACES / "lfw_000.png", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(min_score=2), ValueError, "`min_score` must be a number in \\[0, 1\\], got 2"),
        (dict(max_side=0), ValueError, "`max_side`: expected a whole number >= 32, got 0"),
        (dict(refine_steps="a"), TypeError, "`refine_steps`: expected a whole number, got str"),
        (dict(retry_angles=(NAN,)), ValueError, "`retry_angles` must be finite numbers"),
    ],
)
def test_face_analyzer_refuses_bad_settings(kwargs, error, match):
    from faceclip.face import FaceAnalyzer

    with pytest.raises(error, match=match):
        FaceAnalyzer(backend="opencv", **kwargs)


def test_refine_names_a_wrong_face(analyzer):
    with pytest.raises(TypeError, match=r"face: expected a DetectedFace .* got NoneType"):
        analyzer.refine(FACES / "lfw_000.png", None)


class _TinyFaceDetector:
    """A detector that finds one 10 x 12 pixel face at (50, 40)."""

    def __call__(self, image):
        from faceclip.face import DetectedFace

        landmarks = np.array([[53, 44], [57, 44], [55, 47], [53, 50], [57, 50]], dtype=np.float32)
        return [DetectedFace(box=np.array([50, 40, 60, 52], np.float32), score=0.9, landmarks=landmarks)]


def test_a_tiny_face_is_used_with_a_warning_naming_the_image_and_size(tmp_path, caplog):
    from faceclip.face import FaceAnalyzer

    photo = tmp_path / "group.png"
    Image.new("RGB", (160, 120), (90, 90, 90)).save(photo)
    analyzer = FaceAnalyzer(backend="opencv", refine_steps=0)
    analyzer._detector = _TinyFaceDetector()
    with caplog.at_level(logging.WARNING, logger="faceclip.face.analyzer"):
        aligned = analyzer.align(photo, size=112)
    assert aligned.image.size == (112, 112)  # still used
    assert [r.getMessage() for r in caplog.records] == [
        f"The face in '{photo}' is only 10x12 pixels (under 32); it is upscaled for the crop, so identity and "
        "results will be poor. Use a photo where the face is larger."
    ]


def test_a_face_of_normal_size_gives_no_warning(analyzer, caplog):
    with caplog.at_level(logging.WARNING, logger="faceclip.face.analyzer"):
        analyzer.align(FACES / "lfw_000.png", size=112)
    assert not caplog.records


# ---------------------------------------------------------------------------------------------- scorers


@pytest.fixture(scope="module")
def identity_scorer(analyzer):
    from faceclip.evaluation.identity import IdentityScorer

    return IdentityScorer(analyzer)


@pytest.mark.parametrize(
    ("vector", "error", "match"),
    [
        (None, TypeError, r"reference_vector: expected a \(d,\) array .* got NoneType"),
        ("abc", TypeError, r"reference_vector: expected a \(d,\) array"),
        (np.ones((1, 128)), ValueError, r"reference_vector: expected shape \(d,\) .* got \(1, 128\)"),
        (np.ones(0), ValueError, r"reference_vector: expected shape \(d,\)"),
        (np.full(128, np.nan), ValueError, "reference_vector: the values must be finite and not all zero"),
        (np.zeros(128), ValueError, "reference_vector: the values must be finite and not all zero"),
        (np.ones(5), ValueError, "reference_vector: 5 values, but opencv-sface gives 128"),
    ],
)
def test_identity_scorer_refuses_bad_reference_vectors(identity_scorer, vector, error, match):
    with pytest.raises(error, match=match):
        identity_scorer.score(FACES / "lfw_001.png", vector)


def test_identity_scorer_refuses_bad_references_and_analyzers(identity_scorer):
    from faceclip.evaluation.identity import IdentityScorer

    with pytest.raises(
        TypeError, match="reference: expected a photo path, PIL image or HxWx3 array, got NoneType"
    ):
        identity_scorer.reference_vector(None)
    with pytest.raises(
        TypeError, match=r"analyzer: expected a faceclip\.face\.FaceAnalyzer or None, got str"
    ):
        IdentityScorer("opencv")
    array = np.asarray(Image.open(FACES / "lfw_000.png").convert("RGB"))
    assert identity_scorer.reference_vector(array).shape == (128,)  # arrays are references too


@pytest.mark.parametrize(
    ("method", "args", "error", "match"),
    [
        ("clip_t", ("x.png", ["a"]), TypeError, "images: expected a list of PIL images, got str"),
        (
            "clip_t",
            ([np.zeros((4, 4, 3))], ["a"]),
            TypeError,
            r"images\[0\]: expected a PIL image, got ndarray",
        ),
        ("clip_t", ([Image.new("RGB", (0, 0))], ["a"]), ValueError, r"images\[0\]: the image is empty"),
        ("clip_t", ([Image.new("RGB", (4, 4))], "a"), TypeError, "prompts: expected a list of str"),
        ("clip_t", ([Image.new("RGB", (4, 4))], [None]), TypeError, "prompts: expected a list of str"),
        ("clip_t", ([Image.new("RGB", (4, 4))], ["a", "b"]), ValueError, "got 1 images but 2 prompts"),
        ("clip_i", ([Image.new("RGB", (4, 4))], [None]), TypeError, r"baselines\[0\]: expected a PIL image"),
        ("clip_i", ([Image.new("RGB", (4, 4))], []), ValueError, "got 1 images but 0 baselines"),
    ],
)
def test_clip_scorer_refuses_bad_inputs_before_the_model_runs(method, args, error, match):
    from faceclip.evaluation.clip_score import CLIPScorer

    scorer = CLIPScorer(torch.nn.Identity(), tokenizer=None, image_processor=None, name="unused")
    with pytest.raises(error, match=match):
        getattr(scorer, method)(*args)


def test_missing_clip_weights_name_a_download_of_every_file_needed(monkeypatch, tmp_path):
    from huggingface_hub import constants

    from faceclip.evaluation.clip_score import CLIP_FILES, CLIPScorer, clip_download_command
    from faceclip.hub import WeightsNotFoundError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as err:
        CLIPScorer.from_pretrained()
    command = "hf download openai/clip-vit-large-patch14 " + " ".join(CLIP_FILES)
    assert command == clip_download_command() and command in str(err.value)
    assert {
        "model.safetensors",
        "tokenizer.json",
        "vocab.json",
        "merges.txt",
        "preprocessor_config.json",
    } <= set(CLIP_FILES)


# ---------------------------------------------------------------------------------------------- fp16 CPU


def test_fp16_on_the_cpu_is_said_once_and_diffusers_repeats_are_dropped(monkeypatch, caplog):
    import faceclip.devices as devices

    monkeypatch.setattr(devices, "_fp16_on_cpu_said", False)
    with caplog.at_level(logging.WARNING, logger="faceclip.devices"):
        for _ in range(3):
            assert devices.resolve_dtype("fp16", torch.device("cpu")) == torch.float16
    said = [r.getMessage() for r in caplog.records if r.name == "faceclip.devices"]
    assert said == [devices.FP16_ON_CPU] and "use --dtype bf16 or fp32" in said[0]
    diffusers_logger = logging.getLogger("diffusers.pipelines.pipeline_utils")
    record = diffusers_logger.makeRecord(
        diffusers_logger.name, logging.WARNING, __file__, 0,
        "Pipelines loaded with `dtype=torch.float16` cannot run with `cpu` device. It is not recommended", (), None,
    )  # fmt: skip
    assert not diffusers_logger.filter(record)
    other = diffusers_logger.makeRecord(
        diffusers_logger.name, logging.WARNING, __file__, 0, "other", (), None
    )
    assert diffusers_logger.filter(other)


def test_fp16_on_an_accelerator_and_bf16_on_the_cpu_say_nothing(monkeypatch, caplog):
    import faceclip.devices as devices

    monkeypatch.setattr(devices, "_fp16_on_cpu_said", False)
    with caplog.at_level(logging.WARNING, logger="faceclip.devices"):
        devices.resolve_dtype("bf16", torch.device("cpu"))
        devices.resolve_dtype("fp16", torch.device("cuda"))
    assert not [r for r in caplog.records if r.name == "faceclip.devices"]


# -------------------------------------------------------------------------------------------- hub offline


class _DeadSession:
    """An HTTP session whose every request fails as a machine without network does."""

    def head(self, *args, **kwargs):
        raise ConnectionError("[Errno -3] Temporary failure in name resolution")


@pytest.fixture
def dead_network(monkeypatch, tmp_path):
    """No network, an empty cache, not offline mode: records the ``local_files_only`` of every download."""
    import huggingface_hub
    from huggingface_hub import constants, utils
    from huggingface_hub.errors import LocalEntryNotFoundError

    import faceclip.hub as hub

    monkeypatch.setattr(hub, "_unreachable", None)
    monkeypatch.setattr(hub, "_hub_answered", False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(utils, "get_session", lambda: _DeadSession())
    calls: list[bool] = []

    def download(repo, filename, revision=None, local_files_only=False, **kwargs):
        calls.append(local_files_only)
        if not local_files_only:  # the call that would retry for ~40 s
            raise AssertionError("the hub was asked although it is unreachable")
        raise LocalEntryNotFoundError("cannot find the requested files in the local cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return calls


def test_an_unreachable_hub_is_detected_before_the_first_download(dead_network):
    from faceclip.hub import WeightsNotFoundError, hub_unreachable_reason, resolve_file

    with pytest.raises(WeightsNotFoundError, match=r"the hub could not be reached"):
        resolve_file("someone/some-model", "model/w.pt", what="the weights")
    assert dead_network == [True]  # straight to the cache: no request that retries
    assert "ConnectionError: [Errno -3] Temporary failure in name resolution" in hub_unreachable_reason()


def test_the_hub_is_checked_once_while_it_answers(monkeypatch, tmp_path):
    from huggingface_hub import constants

    import faceclip.hub as hub

    monkeypatch.setattr(hub, "_unreachable", None)
    monkeypatch.setattr(hub, "_hub_answered", False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    probes = []
    monkeypatch.setattr(hub, "_probe_hub", lambda: probes.append(1))
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda repo, name, **kwargs: str(tmp_path / name))
    for name in ("a.pt", "b.pt"):
        assert hub.resolve_file("someone/some-model", name, what="the weights") == tmp_path / name
    assert probes == [1]


def test_default_generate_without_network_fails_fast_and_names_tiny_random(dead_network, tmp_path, capsys):
    from faceclip.cli import main

    code = main(["generate", "--face", str(PHOTO), "--prompt", "a", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "could not be reached" in err and "--model tiny-random" in err
    assert dead_network and all(dead_network)  # every file looked up in the cache only
    assert not (tmp_path / "out").exists()
