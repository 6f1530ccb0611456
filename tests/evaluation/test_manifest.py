import json
from pathlib import Path

import pytest

from faceclip.evaluation.manifest import ManifestEntry, read_manifest, write_manifest


def test_reads_entries_resolving_paths_against_the_manifest_folder(tmp_path):
    manifest = tmp_path / "sub" / "m.jsonl"
    manifest.parent.mkdir()
    lines = [
        {"image": "gen/a.png", "reference": "/faces/alice.jpg", "prompt": "a portrait"},
        {
            "image": "gen/b.png",
            "reference": "faces/bob.jpg",
            "prompt": "",
            "identity": "B",
            "seed": 3,
            "baseline": "base/b.png",
        },
    ]
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n# a comment\n")
    result = read_manifest(manifest)
    assert result.problems == []
    first, second = result.entries
    assert first.line == 1 and first.image == manifest.parent / "gen/a.png"
    assert str(first.reference) == "/faces/alice.jpg" and first.identity == "alice" and first.seed is None
    assert second.line == 2 and second.identity == "B" and second.seed == 3 and second.prompt == ""
    assert second.baseline == manifest.parent / "base/b.png"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"image": "a.png", "prompt": "p"}', "missing key(s) reference"),
        ('{"image": "", "reference": "r.png", "prompt": "p"}', "'image' must be a non-empty string"),
        ('{"image": "a.png", "reference": "r.png", "prompt": 5}', "'prompt' must be a non-empty string"),
        ('{"image": "a.png", "reference": "r.png", "prompt": "p", "seed": "1"}', "'seed' must be an integer"),
        (
            '{"image": "a.png", "reference": "r.png", "prompt": "p", "identity": 1}',
            "'identity' must be a string",
        ),
    ],
)
def test_a_malformed_line_is_a_problem_with_its_line_number_and_the_rest_is_kept(tmp_path, text, expected):
    good, other = (json.dumps({"image": name, "reference": "r.png", "prompt": "p"}) for name in ("a.png", "b.png"))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(f"{good}\n{text}\n{other}\n")
    result = read_manifest(manifest)
    assert [entry.line for entry in result.entries] == [1, 3]
    (problem,) = result.problems
    assert problem.line == 2 and expected in problem.message
    assert str(problem).startswith("line 2: ")


def test_missing_manifest_names_the_argument(tmp_path):
    with pytest.raises(FileNotFoundError, match="--manifest"):
        read_manifest(tmp_path / "nope.jsonl")


def test_write_then_read_round_trips_with_relative_paths(tmp_path):
    entries = [
        ManifestEntry(1, tmp_path / "images/a.png", tmp_path / "faces/a.png", "p1", "a", seed=0),
        ManifestEntry(
            2, tmp_path / "images/b.png", tmp_path / "faces/b.png", "p2", "b", baseline=tmp_path / "x.png"
        ),
    ]
    path = write_manifest(entries, tmp_path / "manifest.jsonl")
    assert json.loads(path.read_text().splitlines()[0])["image"] == "images/a.png"
    again = read_manifest(path)
    assert [
        (e.image.resolve(), e.reference.resolve(), e.prompt, e.identity, e.seed, e.baseline)
        for e in again.entries
    ] == [
        (
            e.image.resolve(),
            e.reference.resolve(),
            e.prompt,
            e.identity,
            e.seed,
            e.baseline and e.baseline.resolve(),
        )
        for e in entries
    ]
    assert list(tmp_path.glob(".*tmp")) == []


def test_paths_given_relative_to_the_working_directory_read_back_from_anywhere(tmp_path, monkeypatch):
    # `eval run --identities ids --out er` passes paths relative to the working directory, not to er/.
    work = tmp_path / "work"
    (work / "ids").mkdir(parents=True)
    (work / "er").mkdir()
    monkeypatch.chdir(work)
    entry = ManifestEntry(1, Path("er/images/a.png"), Path("ids/a.png"), "p", "a", baseline=Path("er/b.png"))
    path = write_manifest([entry], Path("er") / "manifest.jsonl")
    line = json.loads(path.read_text())
    assert (line["image"], line["reference"], line["baseline"]) == ("images/a.png", "../ids/a.png", "b.png")

    monkeypatch.chdir(tmp_path)
    [again] = read_manifest(work / "er" / "manifest.jsonl").entries
    assert again.reference.resolve() == work / "ids" / "a.png"
    assert again.image.resolve() == work / "er" / "images" / "a.png"
    assert again.baseline.resolve() == work / "er" / "b.png"
