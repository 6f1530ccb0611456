"""Scoring a manifest of real files: per-image scores, and problems that keep their line numbers."""

import json

import pytest
from PIL import ImageOps

from faceclip.evaluation.manifest import read_manifest
from faceclip.evaluation.score import score_entries


@pytest.fixture(scope="module")
def scored(tmp_path_factory, astronaut, noise_image, identity_scorer, tiny_clip):
    root = tmp_path_factory.mktemp("scored")
    astronaut.save(root / "astronaut.png")
    ImageOps.mirror(astronaut).resize((256, 256)).save(root / "gen_same.png")
    for name in ("gen_same_2.png", "gen_same_3.png"):  # each image is listed once (a repeat is skipped)
        ImageOps.mirror(astronaut).resize((256, 256)).save(root / name)
    noise_image.save(root / "gen_noise.png")
    noise_image.save(root / "gen_noise_2.png")
    noise_image.save(root / "noface_ref.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    lines = [
        {
            "image": "gen_same.png",
            "reference": "astronaut.png",
            "prompt": "a portrait",
            "seed": 0,
            "baseline": "gen_same.png",
        },
        {"image": "gen_noise.png", "reference": "astronaut.png", "prompt": "a portrait", "seed": 1},
        "{broken",
        {"image": "missing.png", "reference": "astronaut.png", "prompt": "a portrait"},
        {"image": "corrupt.png", "reference": "astronaut.png", "prompt": "a portrait"},
        {"image": "gen_same_2.png", "reference": "no_such_ref.png", "prompt": "a portrait"},
        {"image": "gen_same_3.png", "reference": "noface_ref.png", "prompt": "a portrait"},
        {
            "image": "gen_noise_2.png",
            "reference": "astronaut.png",
            "prompt": "on the moon",
            "identity": "eileen",
            "baseline": "missing_baseline.png",
        },
    ]
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    (root / "manifest.jsonl").write_text(text + "\n")
    manifest = read_manifest(root / "manifest.jsonl")
    result = score_entries(manifest.entries, identity_scorer, tiny_clip, batch_size=2, progress=False)
    return manifest, result


def test_good_lines_are_scored(scored):
    _, result = scored
    by_line = {score.line: score for score in result.scores}
    assert sorted(by_line) == [1, 2, 8]
    same, noise, moon = by_line[1], by_line[2], by_line[8]
    assert same.face_detected and same.id_sim > 0.8 and same.identity == "astronaut" and same.seed == 0
    assert same.clip_i == pytest.approx(1.0, abs=1e-5)  # its baseline is the same file
    assert not noise.face_detected and noise.id_sim == 0.0 and noise.clip_i is None
    assert moon.identity == "eileen" and moon.clip_i is None
    assert all(isinstance(s.clip_t, float) and -100 <= s.clip_t <= 100 for s in result.scores)


def test_each_bad_line_is_reported_with_its_line_number(scored):
    manifest, result = scored
    (malformed,) = manifest.problems
    assert malformed.line == 3 and "not valid JSON" in malformed.message
    problems = {problem.line: problem.message for problem in result.problems}
    assert sorted(problems) == [4, 5, 6, 7, 8]
    assert "missing.png" in problems[4] and problems[4].startswith("image:")
    assert "corrupt.png" in problems[5]
    assert "no_such_ref.png" in problems[6]
    assert "reference" in problems[7] and "No face" in problems[7]
    assert "CLIP-I skipped" in problems[8]


def test_scores_do_not_depend_on_batch_size(scored, identity_scorer, tiny_clip):
    manifest, result = scored
    again = score_entries(manifest.entries, identity_scorer, tiny_clip, batch_size=16, progress=False)
    assert [(s.line, s.id_sim) for s in again.scores] == [(s.line, s.id_sim) for s in result.scores]
    assert [s.clip_t for s in again.scores] == pytest.approx([s.clip_t for s in result.scores], abs=1e-4)


def test_without_clip_only_identity_is_scored(scored, identity_scorer):
    manifest, _ = scored
    result = score_entries(manifest.entries[:2], identity_scorer, clip=None, progress=False)
    assert [s.clip_t for s in result.scores] == [None, None]
    assert [s.face_detected for s in result.scores] == [True, False]
    with pytest.raises(ValueError, match="batch_size"):
        score_entries(manifest.entries, identity_scorer, batch_size=0)
