import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from faceclip.cli import main
from faceclip.training.config import DataConfig
from faceclip.training.data import build_dataloader
from faceclip.training.prepare import list_items

FACES = Path(__file__).parents[1] / "data" / "faces"


def _input_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    for person, names in {"ann": ["lfw_000", "lfw_001"], "bob": ["lfw_002"]}.items():
        (folder / person).mkdir(parents=True)
        for name in names:
            shutil.copy(FACES / f"{name}.png", folder / person / f"{name}.png")
            (folder / person / f"{name}.txt").write_text(f"a photo of {person}")
    Image.new("RGB", (64, 64), (0, 128, 0)).save(folder / "bob" / "blank.png")  # no face: skipped
    (folder / "bob" / "blank.txt").write_text("a green square")
    return folder


def test_prepare_writes_shards_skips_faceless_images_and_resumes(tmp_path, capsys):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    tower = tmp_path / "tower"
    config = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=8)  # fmt: skip
    CLIPVisionModelWithProjection(config).save_pretrained(tower)
    folder, out = _input_folder(tmp_path), tmp_path / "shards"
    args = ["prepare", str(folder), "--out", str(out), "--samples-per-shard", "2", "--identity-from-folder",
            "--face-size", "112", "--image-target-l", str(tower)]  # fmt: skip
    assert main([*args, "--shard-index", "1", "--num-shards", "2"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["shards_written"] == [1] and first["samples_written"] + first["samples_skipped"] == 2
    assert main([*args, "--shard-index", "0", "--num-shards", "2"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["shards_written"] == [0]
    assert first["samples_skipped"] + second["samples_skipped"] == 1
    assert first["skipped_reasons"] | second["skipped_reasons"] == {"no face": 1}
    assert json.loads((out / "identities.json").read_text()) == {"ann": 0, "bob": 1}
    assert main([*args, "--shard-index", "0", "--num-shards", "2"]) == 0  # re-run: nothing to redo
    assert json.loads(capsys.readouterr().out)["shards_skipped"] == [0]

    batch = next(iter(build_dataloader(DataConfig(source=str(out), batch_size=3, image_size=32, face_size=112,
                                                  different_reference_photo=False))))  # fmt: skip
    assert sorted(batch["caption"]) == ["a photo of ann", "a photo of ann", "a photo of bob"]
    assert batch["face"].shape == (3, 3, 112, 112) and batch["targets"]["image_l"].shape == (3, 8)
    assert sorted(batch["identity"].tolist()) == [0, 0, 1]
    assert torch.isfinite(batch["targets"]["image_l"]).all()


def test_prepare_user_errors(tmp_path, capsys):
    assert main(["prepare", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "INPUT" in capsys.readouterr().err
    (tmp_path / "m.jsonl").write_text('{"image": "a.png"}\n')
    assert main(["prepare", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "m.jsonl:1" in capsys.readouterr().err


def test_list_items_reads_a_jsonl_manifest(tmp_path):
    (tmp_path / "m.jsonl").write_text(
        '{"image": "b.png", "caption": "x", "identity": 7}\n\n{"image": "a.png", "caption": "y"}\n'
    )
    items = list_items(tmp_path / "m.jsonl")
    assert [i.image.name for i in items] == ["a.png", "b.png"] and items[1].identity == "7"


class _FakeAnalyzer:
    """Every image 'has' a face: the aligned crop is the resized image (no detector needed)."""

    def align(self, image, size):
        from types import SimpleNamespace

        import numpy as np

        face = SimpleNamespace(box=np.zeros(4), score=1.0, landmarks=np.zeros((5, 2)))
        return SimpleNamespace(face=face, image=image.resize((size, size)))


def _photos(folder: Path, people: dict[str, list[str]]) -> list:
    for person, names in people.items():
        (folder / person).mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy(FACES / f"{name}.png", folder / person / f"{name}.png")
            (folder / person / f"{name}.txt").write_text(f"a photo of {person}")
    return list_items(folder, identity_from_folder=True)


def test_prepare_refuses_to_mix_another_input_into_an_existing_folder(tmp_path):
    from faceclip.training.prepare import PrepareMismatchError, prepare_shards

    out, kw = (
        tmp_path / "shards",
        dict(analyzer=_FakeAnalyzer(), samples_per_shard=2, face_size=16, progress=False),
    )
    items = _photos(tmp_path / "in", {"bob": ["lfw_000", "lfw_001"], "dan": ["lfw_002"]})
    assert prepare_shards(items, out, **kw).shards_written == [0, 1]
    identities = (out / "identities.json").read_text()
    assert prepare_shards(items, out, **kw).shards_skipped == [0, 1]  # same input: resumes
    more = _photos(tmp_path / "in", {"ann": ["astronaut"]})  # a new person sorts first: labels would shift
    with pytest.raises(PrepareMismatchError, match="--overwrite"):
        prepare_shards(more, out, **kw)
    with pytest.raises(PrepareMismatchError, match="samples_per_shard"):
        prepare_shards(items, out, **{**kw, "samples_per_shard": 3})
    assert (out / "identities.json").read_text() == identities  # nothing rewritten
    report = prepare_shards(more, out, **kw, overwrite=True)
    assert report.shards_written == [0, 1] and report.samples_written == 4
    assert json.loads((out / "identities.json").read_text()) == {"ann": 0, "bob": 1, "dan": 2}


def test_prepare_cli_refuses_a_changed_input(tmp_path, capsys):
    folder, out = tmp_path / "in", tmp_path / "shards"
    _photos(folder, {"bob": ["lfw_000"]})
    out.mkdir()
    (out / "shard-000000.tar").write_bytes(b"")  # shards of unknown origin
    assert main(["prepare", str(folder), "--out", str(out), "--backend", "opencv"]) == 2
    err = capsys.readouterr().err
    assert "new --out" in err and "Traceback" not in err


def test_precomputed_image_target_equals_the_training_time_target_for_a_non_square_photo(tmp_path):
    from faceclip.face import to_tensor
    from faceclip.training.prepare import Item, PrepareMismatchError, prepare_shards
    from faceclip.training.targets import build_image_tower

    face = Image.open(FACES / "astronaut.png").convert("RGB").resize((96, 96))
    photo = Image.new("RGB", (192, 96))  # 2:1: the centre square is what training sees
    photo.paste(face, (48, 0))
    photo.paste(face.rotate(90), (0, 0))
    photo.paste(face.transpose(Image.Transpose.FLIP_TOP_BOTTOM), (144, 0))
    photo.save(tmp_path / "wide.png")
    tower = build_image_tower("tiny-random", 32, seed=0)
    items = [Item(tmp_path / "wide.png", "a wide photo")]
    kw = dict(analyzer=_FakeAnalyzer(), face_size=16, image_towers={"l": tower}, progress=False)
    prepare_shards(items, tmp_path / "shards", **kw)
    whole = torch.nn.functional.interpolate(to_tensor(photo)[None], size=(32, 32), mode="bicubic")
    squashed = tower(whole)[0]  # the whole photo squashed to a square: another view of it
    for image_size in (48, 64):
        config = DataConfig(source=str(tmp_path / "shards"), batch_size=1, image_size=image_size, face_size=16,
                            different_reference_photo=False)  # fmt: skip
        batch = next(iter(build_dataloader(config)))
        stored, trained = batch["targets"]["image_l"][0], tower(batch["image"])[0]
        # The check tells views of the photo apart; stored and trained differ only by resampling.
        assert (squashed - trained).norm() > 0.03 * trained.norm()
        assert (stored - trained).norm() < 0.01 * trained.norm()

    # Shards whose targets were made the old way (no image_target_view in the record) are not extended.
    record = json.loads((tmp_path / "shards" / "prepare.json").read_text())
    del record["image_target_view"]
    (tmp_path / "shards" / "prepare.json").write_text(json.dumps(record))
    with pytest.raises(PrepareMismatchError, match="preprocessing"):
        prepare_shards(items, tmp_path / "shards", **kw)


def test_bad_numbers_are_refused_before_anything_is_written(tmp_path, capsys):
    from faceclip.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.txt").write_text("a photo")
    (photos / "a.png").write_bytes(
        (Path(__file__).parents[1] / "data" / "faces" / "astronaut.png").read_bytes()
    )
    out = tmp_path / "shards"
    assert main(["prepare", str(photos), "--out", str(out), "--face-size", "0"]) == 2
    assert "--face-size must be from 16" in capsys.readouterr().err
    assert not out.exists()
