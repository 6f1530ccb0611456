import itertools

import pytest
import torch
from PIL import Image

from faceclip.training.config import DataConfig
from faceclip.training.data import GlobalBatchSampler, build_dataloader, build_source
from faceclip.training.shards import encode_sample, list_shards, write_shard
from faceclip.training.synthetic import SyntheticFaceDataset


def _sample(key: str, identity: int, colour: tuple[int, int, int]) -> dict:
    image = Image.new("RGB", (40, 30), colour)
    face = Image.new("RGB", (16, 16), colour)
    meta = {"identity": identity, "detection": {"box": [0, 0, 1, 1], "score": 0.9, "landmarks": [[0, 0]] * 5}}
    return encode_sample(
        key, image, f"caption {key}", face, meta, targets={"image_l": torch.full((4,), float(identity))}
    )


def test_shards_round_trip_and_corrupt_sample_is_skipped_and_counted(tmp_path):
    samples = [_sample(f"{i:04d}", i % 2, (10 * i, 0, 0)) for i in range(5)]
    samples[2]["jpg"] = b"this is not a jpeg"
    assert write_shard(tmp_path / "shard-000000.tar", samples) == 5
    assert list_shards(tmp_path) == [tmp_path / "shard-000000.tar"]
    config = DataConfig(source=str(tmp_path), batch_size=4, image_size=24, face_size=16,
                        different_reference_photo=False)  # fmt: skip
    batch = next(iter(build_dataloader(config)))
    assert batch["caption"] == ["caption 0000", "caption 0001", "caption 0003", "caption 0004"]
    assert batch["skipped"] == 1
    assert batch["image"].shape == (4, 3, 24, 24) and batch["face"].shape == (4, 3, 16, 16)
    assert batch["original_size"][0].tolist() == [30, 40] and batch["crop_top_left"][0].tolist() == [0, 4]
    assert batch["identity"].tolist() == [0, 1, 1, 0]
    assert torch.equal(batch["targets"]["image_l"][:, 0], torch.tensor([0.0, 1.0, 1.0, 0.0]))
    assert batch["image"][1, 0].mean().item() == pytest.approx(10 / 255, abs=0.01)


def test_truncated_shard_does_not_stop_the_stream(tmp_path):
    write_shard(tmp_path / "shard-000000.tar", [_sample(f"{i:04d}", 0, (0, 0, 0)) for i in range(3)])
    data = (tmp_path / "shard-000000.tar").read_bytes()
    (tmp_path / "shard-000001.tar").write_bytes(data[: len(data) // 2])
    config = DataConfig(source=str(tmp_path), batch_size=2, image_size=8, face_size=8, seed=3)
    batches = list(itertools.islice(iter(build_dataloader(config)), 4))
    assert all(len(b["caption"]) == 2 for b in batches)
    assert sum(b["skipped"] for b in batches) >= 1  # 2 epochs of 4 samples: the shard's cut is counted


def test_a_truncated_shard_is_counted_once_in_skipped_for_any_number_of_processes(tmp_path, caplog):
    from faceclip.training.data import ShardStream

    write_shard(tmp_path / "shard-000000.tar", [_sample(f"{i:04d}", 0, (0, 0, 0)) for i in range(3)])
    data = (tmp_path / "shard-000000.tar").read_bytes()
    (tmp_path / "shard-000001.tar").write_bytes(data[: len(data) // 2])  # 1 readable sample, then cut
    kw = dict(image_size=8, face_size=8, seed=3, different_reference_photo=False)
    with caplog.at_level("WARNING", logger="faceclip.training.shards"):
        one = [s["_skipped"] for s in itertools.islice(ShardStream(list_shards(tmp_path), **kw), 16)]
    cuts = sum("skipping the rest of shard" in r.getMessage() for r in caplog.records)
    assert cuts >= 3 and sum(one) == cuts  # 4 epochs of 4 samples; each cut read is counted once
    # 3 processes (fewer shards than processes: each reads every shard and takes every 3rd sample; per epoch
    # process 0 gets 2 samples, 1 and 2 one each): the cut is still counted once, not by every process.
    per_rank = [8, 4, 4]
    streams = [ShardStream(list_shards(tmp_path), rank=r, world_size=3, **kw) for r in range(3)]
    three = [s["_skipped"] for stream, n in zip(streams, per_rank) for s in itertools.islice(stream, n)]
    assert sum(three) == sum(one)


def test_global_batches_are_the_same_for_any_number_of_processes_and_resume():
    one = GlobalBatchSampler(10, 4, seed=1)
    two = [GlobalBatchSampler(10, 2, rank=r, world_size=2, seed=1) for r in range(2)]
    first = list(itertools.islice(iter(one), 6))
    split = [list(itertools.islice(iter(s), 6)) for s in two]
    assert [a + b for a, b in zip(*split)] == first
    resumed = list(itertools.islice(iter(GlobalBatchSampler(10, 4, seed=1, start_batch=2)), 4))
    assert resumed == first[2:]
    assert sorted(first[0] + first[1] + first[2][:2]) == list(
        range(10)
    )  # each epoch visits every sample once


def test_synthetic_source_is_deterministic_and_learnable_structure():
    a, b = SyntheticFaceDataset(face_size=32, seed=4), SyntheticFaceDataset(face_size=32, seed=4)
    assert torch.equal(a[7]["image"], b[7]["image"]) and a[7]["caption"] == b[7]["caption"]
    same = [i for i in range(40) if a[i]["identity"] == a[0]["identity"]][:2]
    f0, f1 = a[same[0]]["face"], a[same[1]]["face"]
    other = next(a[i]["face"] for i in range(40) if a[i]["identity"] != a[0]["identity"])
    assert (f0 - f1).abs().mean() < (f0 - other).abs().mean()  # two photos of one person look alike
    held_out = build_source(DataConfig(face_size=32), train=False)
    assert held_out[0]["caption"] != build_source(DataConfig(face_size=32))[0]["caption"] or not torch.equal(
        held_out[0]["face"], build_source(DataConfig(face_size=32))[0]["face"]
    )


def test_unknown_source_names_the_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data"):
        build_source(DataConfig(source=str(tmp_path)))


def test_shards_without_a_readable_sample_raise_a_named_error(tmp_path):
    from faceclip.training.data import NoReadableSampleError

    samples = [_sample("0000", 0, (1, 2, 3))]
    samples[0]["jpg"] = b"not a jpeg"
    write_shard(tmp_path / "shard-000000.tar", samples)
    config = DataConfig(source=str(tmp_path), batch_size=1, image_size=24, face_size=16)
    with pytest.raises(NoReadableSampleError, match="no readable sample"):
        next(iter(build_dataloader(config)))


def _manifest(folder, lines: list[str]):
    folder.mkdir(exist_ok=True)
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize(
    ("lines", "message"),
    [(['{"image": "a.png", "caption": "x"}', "", "{not json"], r"manifest.jsonl:3: not valid JSON"),
     (['{"image": "a.png"}'], r"manifest.jsonl:1: lacks caption"),
     (['["a.png", "x"]'], r"manifest.jsonl:1: lacks image, caption")],
)  # fmt: skip
def test_manifest_errors_name_the_file_and_line(tmp_path, lines, message):
    from faceclip.training.data import ManifestDataset

    with pytest.raises(ValueError, match=message):
        ManifestDataset(_manifest(tmp_path, lines), image_size=8, face_size=8)


def test_manifest_warnings_name_the_line(tmp_path, caplog):
    from faceclip.training.data import ManifestDataset

    folder = _manifest(tmp_path, ["", '{"image": "missing.png", "caption": "x", "face": "f.png"}'])
    with caplog.at_level("WARNING"):
        assert ManifestDataset(folder, image_size=8, face_size=8)[0] is None
    assert "manifest.jsonl:2:" in caplog.text


@pytest.mark.parametrize("workers", [0, 2])
def test_shard_stream_resumes_exactly_with_different_reference_photos(tmp_path, workers):
    """Batches 2 and 3 of a straight pass equal the first two batches of a stream resumed at batch 2, faces
    (another photo of the person, remembered from earlier samples) included."""
    for shard in range(2):
        samples = [_sample(f"{shard}{i:03d}", i % 3, (40 * i, 20 * shard, 0)) for i in range(6)]
        write_shard(tmp_path / f"shard-{shard:06d}.tar", samples)
    config = DataConfig(source=str(tmp_path), batch_size=2, image_size=24, face_size=16, num_workers=workers)
    straight = list(itertools.islice(build_dataloader(config), 4))
    resumed = list(itertools.islice(build_dataloader(config, start_batch=2), 2))
    assert any(not torch.equal(b["face"], straight[0]["face"]) for b in straight[1:])
    for a, b in zip(straight[2:], resumed):
        assert a["caption"] == b["caption"] and torch.equal(a["face"], b["face"])


def test_shard_stream_resumes_at_an_epoch_boundary(tmp_path):
    write_shard(tmp_path / "shard-000000.tar", [_sample(f"{i:04d}", i % 2, (40 * i, 0, 0)) for i in range(4)])
    config = DataConfig(source=str(tmp_path), batch_size=2, image_size=24, face_size=16)
    straight = list(itertools.islice(build_dataloader(config), 3))
    resumed = next(iter(build_dataloader(config, start_batch=2)))  # the first epoch is replayed whole
    assert resumed["caption"] == straight[2]["caption"] and torch.equal(resumed["face"], straight[2]["face"])
