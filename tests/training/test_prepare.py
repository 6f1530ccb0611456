import json
import shutil
from pathlib import Path

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
