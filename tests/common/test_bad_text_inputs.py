"""Bad text inputs (configs, captions, manifests) and evaluation outputs: one message naming the file and line (or
the option), exit code 2 where nothing could be done, no traceback, nothing written.

Fixtures are made at test time; Latin-1 text is written as bytes (``café`` is ``caf\\xe9``, not UTF-8).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from faceclip.cli import main

FACES = Path(__file__).parents[1] / "data" / "faces"
LATIN1_CAFE = b"caf\xe9"


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if training starts: a bad argument must be refused first."""
    import faceclip.cli.train

    def refuse(*args, **kwargs):
        raise AssertionError("training started before the bad input was refused")

    monkeypatch.setattr(faceclip.cli.train, "_fit", refuse)


# ----------------------------------------------------------------------------------------------- decoding helper


def test_decode_utf8_names_the_line_and_column_and_drops_a_byte_order_mark():
    from faceclip.text_input import NotUTF8Error, decode_utf8

    assert decode_utf8(b"\xef\xbb\xbfrun: 1\n", "a.yaml") == "run: 1\n"
    with pytest.raises(NotUTF8Error) as caught:
        decode_utf8(b"line one\n  " + LATIN1_CAFE + b"\n", "a.txt")
    error = caught.value
    assert (error.line, error.column, error.byte) == (2, 6, 0xE9)
    assert str(error).startswith("a.txt:2: not UTF-8 text (byte 0xe9 at column 6); save the file as UTF-8")
    with pytest.raises(NotUTF8Error, match=r"^m.jsonl:7: "):
        decode_utf8(LATIN1_CAFE, "m.jsonl", first_line=7)
    with pytest.raises(NotUTF8Error, match=r"^w.txt:1: UTF-16 text .*`iconv -f utf-16 -t utf-8"):
        decode_utf8("run: 1\n".encode("utf-16"), "w.txt")


# ----------------------------------------------------------------------------------------------- 1. configs


def test_a_config_that_is_not_valid_yaml_names_the_file_line_and_column(tmp_path, capsys, no_training):
    config = tmp_path / "bad.yaml"
    config.write_text("run:\n  max_steps: 3\noptim: {lr: 1e-4\n")
    code, err = run(capsys, "train", "stage1", "--config", str(config), "--out", str(tmp_path / "out"))
    assert code == 2
    assert f"faceclip train: error: --config: '{config}' is not valid YAML (" in err
    assert "at line 4, column 1" in err and "fix the file" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_set_value_that_is_not_valid_yaml_names_the_argument(tmp_path, capsys, no_training):
    code, err = run(capsys, "train", "stage1", "--set", "optim.lr=[1", "--out", str(tmp_path / "out"))
    assert code == 2
    assert "--set 'optim.lr=[1': the value is not valid YAML (" in err and "line 1, column 3" in err
    assert "quote it" in err and not (tmp_path / "out").exists()


def test_a_latin1_config_names_the_file_line_and_column(tmp_path, capsys, no_training):
    config = tmp_path / "latin1.yaml"
    config.write_bytes(b'run:\n  output_dir: "' + LATIN1_CAFE + b'"\n')
    code, err = run(capsys, "train", "stage1", "--config", str(config), "--out", str(tmp_path / "out"))
    assert code == 2
    assert f"--config: {config}:2: not UTF-8 text (byte 0xe9 at column 19)" in err
    assert not (tmp_path / "out").exists()


def test_load_config_raises_config_error_for_yaml_and_encoding(tmp_path):
    from faceclip.training.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"--set 'loss.kind=\{a': the value is not valid YAML"):
        load_config("stage1", overrides=["loss.kind={a"])
    config = tmp_path / "c.yaml"
    config.write_bytes(b"optim:\n  lr: 0.5\x07\n")  # a control character: located by its offset
    with pytest.raises(
        ConfigError, match=r"unacceptable character #x0007.* at line 2, column 10\); fix the file"
    ):
        load_config("stage1", config)
    config.write_bytes(b"\xef\xbb\xbfstage: stage1\noptim:\n  lr: 0.5\n")  # a byte-order mark is fine
    assert load_config("stage1", config).optim.lr == 0.5


# ----------------------------------------------------------------------------------------------- 2. captions


def test_a_latin1_caption_file_names_the_file_and_line_before_anything_is_written(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b"):
        shutil.copy(FACES / "lfw_000.png", photos / f"{name}.png")
    (photos / "a.txt").write_text("a portrait")
    (photos / "b.txt").write_bytes(b"a portrait\nin a " + LATIN1_CAFE)
    code, err = run(capsys, "prepare", str(photos), "--out", str(tmp_path / "shards"))
    assert code == 2
    assert f"{photos / 'b.txt'}:2: not UTF-8 text (byte 0xe9 at column 9)" in err
    assert not (tmp_path / "shards").exists()


def test_a_latin1_line_in_a_prepare_manifest_names_the_file_and_line(tmp_path):
    from faceclip.training.prepare import list_items

    manifest = tmp_path / "items.jsonl"
    manifest.write_bytes(
        b'{"image": "a.png", "caption": "ok"}\n{"image": "b.png", "caption": "' + LATIN1_CAFE + b'"}\n'
    )
    with pytest.raises(
        ValueError, match=rf"^{re.escape(str(manifest))}:2: not UTF-8 text \(byte 0xe9 at column 35\)"
    ):
        list_items(manifest)


def test_a_latin1_line_in_a_training_manifest_names_the_file_and_line(tmp_path):
    from faceclip.training.data import MANIFEST, ManifestDataset

    (tmp_path / MANIFEST).write_bytes(b'{"image": "a.png", "caption": "' + LATIN1_CAFE + b'"}\n')
    with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path / MANIFEST))}:1: not UTF-8 text"):
        ManifestDataset(tmp_path, image_size=8, face_size=8)


def test_a_latin1_caption_in_a_shard_is_a_skipped_sample_naming_its_member():
    from faceclip.training.shards import decode_sample, encode_sample

    picture = Image.new("RGB", (16, 16), "red")
    raw = encode_sample("000000000003", picture, "unused", picture, {"identity": None})
    assert decode_sample(raw, 8, 8)["caption"] == "unused"
    raw["txt"] = b"a " + LATIN1_CAFE
    with pytest.raises(ValueError, match=r"^000000000003.txt:1: not UTF-8 text \(byte 0xe9 at column 6\)"):
        decode_sample(raw, 8, 8)


def test_a_latin1_prompt_file_for_eval_run_names_the_file_and_line_before_loading(
    tmp_path, capsys, monkeypatch
):
    import faceclip.registry

    monkeypatch.setattr(
        faceclip.registry, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded")
    )
    (tmp_path / "ids").mkdir()
    shutil.copy(FACES / "astronaut.png", tmp_path / "ids")
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"a portrait\n# comment\na portrait in a " + LATIN1_CAFE + b"\n")
    code, err = run(capsys, "eval", "run", "--model", "tiny-random", "--identities", str(tmp_path / "ids"),
                    "--prompts", str(prompts), "--out", str(tmp_path / "out"))  # fmt: skip
    assert code == 2 and f"--prompts: {prompts}:3: not UTF-8 text (byte 0xe9 at column 20)" in err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------- 2-3. manifests


def _line(image: str, prompt: str = "a portrait", reference: str = "ref.png") -> bytes:
    return json.dumps({"image": image, "reference": reference, "prompt": prompt}).encode() + b"\n"


def test_a_latin1_manifest_line_drops_only_that_line(tmp_path):
    from faceclip.evaluation.manifest import read_manifest

    manifest = tmp_path / "m.jsonl"
    latin1 = b'{"image": "b.png", "reference": "ref.png", "prompt": "' + LATIN1_CAFE + b'"}\n'
    manifest.write_bytes(b"\xef\xbb\xbf" + _line("a.png") + latin1 + _line("c.png"))
    result = read_manifest(manifest)
    assert [entry.line for entry in result.entries] == [1, 3]
    (problem,) = result.problems
    assert problem.line == 2 and problem.message.startswith("not UTF-8 text (byte 0xe9 at column 58)")


def test_an_image_listed_twice_is_counted_once_with_a_problem_naming_both_lines(tmp_path):
    from faceclip.evaluation.manifest import read_manifest

    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(
        _line("a.png") + _line("b.png") + _line("a.png") + _line("./b.png", prompt="a person on the moon")
    )
    result = read_manifest(manifest)
    assert [entry.line for entry in result.entries] == [1, 2]
    same, other_prompt = result.problems
    assert same.line == 3 and same.message.startswith("lists the same image as line 1 (a.png); each image is")
    assert other_prompt.line == 4 and "as line 2 (b.png) with another prompt;" in other_prompt.message


def test_an_empty_manifest_says_it_lists_no_images(tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("# made by hand\n\n")
    code, err = run(capsys, "eval", "score", "--manifest", str(manifest), "--out", str(tmp_path / "out"))
    assert code == 2
    assert f"--manifest: manifest {manifest} lists no images" in err and "see the problems" not in err
    assert not (tmp_path / "out").exists()


def test_a_manifest_whose_every_line_was_dropped_gives_the_reasons(tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b"{broken\n" + b'"' + LATIN1_CAFE + b'"\n' + b"[1]\n" + b"[2]\n")
    code, err = run(capsys, "eval", "score", "--manifest", str(manifest), "--out", str(tmp_path / "out"))
    assert code == 2
    message = err.strip().splitlines()[-1]
    assert message.startswith(
        f"faceclip eval: error: --manifest: every line of manifest {manifest} was dropped: "
    )
    assert f"{manifest}:1: not valid JSON" in message and f"{manifest}:2: not UTF-8 text" in message
    assert f"{manifest}:3: expected a JSON object" in message and "and 1 more (listed above)" in message
    assert "see the problems" not in err and not (tmp_path / "out").exists()


def test_eval_score_lists_each_dropped_line_as_file_and_line_and_every_reason_when_nothing_scores(
    tmp_path, capsys, caplog
):
    manifest = tmp_path / "m.jsonl"
    Image.open(FACES / "astronaut.png").save(tmp_path / "ref.png")
    latin1 = b'{"image": "b.png", "reference": "ref.png", "prompt": "' + LATIN1_CAFE + b'"}\n'
    manifest.write_bytes(_line("gone.png") + latin1 + _line("gone.png"))
    with caplog.at_level(logging.WARNING):
        code, err = run(capsys, "eval", "score", "--manifest", str(manifest), "--out", str(tmp_path / "out"),
                        "--no-clip", "--face-backend", "opencv", "--device", "cpu", "--no-contact-sheet")  # fmt: skip
    assert code == 1
    warnings = [record.getMessage() for record in caplog.records]
    assert f"{manifest}:2: not UTF-8 text (byte 0xe9 at column 58)" in " ".join(warnings)
    assert f"{manifest}:3: lists the same image as line 1 (gone.png)" in " ".join(warnings)
    last = err.strip().splitlines()[-1]
    assert last.startswith("faceclip eval: no image could be scored: every line was dropped: ")
    assert f"{manifest}:1: image:" in last and "gone.png" in last and "see the problems" not in err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [p["line"] for p in report["problems"]] == [1, 2, 3]


# ----------------------------------------------------------------------------------------------- 6. --out is a file


@pytest.mark.parametrize(
    "command",
    [
        ["prepare", "photos"],
        ["train", "stage1", "--data", "synthetic", "--max-steps", "1"],
    ],
)
def test_an_existing_file_as_out_is_refused_and_nothing_is_written(
    tmp_path, capsys, monkeypatch, no_training, command
):
    monkeypatch.chdir(tmp_path)
    Path("photos").mkdir()
    shutil.copy(FACES / "lfw_000.png", "photos/a.png")
    Path("photos/a.txt").write_text("a portrait")
    Path("taken").write_text("keep me")
    before = sorted(p.as_posix() for p in Path().rglob("*"))
    code, err = run(capsys, *command, "--out", "taken")
    assert code == 2
    assert f"faceclip {command[0]}: error: --out 'taken' is a file, not a folder; choose a folder." in err
    assert Path("taken").read_text() == "keep me"
    assert sorted(p.as_posix() for p in Path().rglob("*")) == before
