"""Training data: sources (synthetic, WebDataset shards, a JSONL manifest folder), batching and distribution.

Batches are *global*: global batch ``k`` is a fixed list of samples, and process ``r`` of ``W`` takes its
``r``-th slice. With map-style sources (synthetic, manifest) the stream depends only on the seed, so a run with
2 processes sees exactly the samples a 1-process run with the same global batch sees, and resuming at a data
position continues the same stream. Shards are split between processes (and loader workers) shard by shard.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from faceclip.text_input import read_utf8
from faceclip.training.config import DataConfig
from faceclip.training.shards import decode_sample, iter_raw_samples, list_shards
from faceclip.training.synthetic import SyntheticFaceDataset

logger = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"


class NoReadableSampleError(RuntimeError):
    """A pass over this process's shards yielded no readable sample."""


def collate(samples: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack samples into a batch; ``None`` entries (unreadable samples) are dropped and counted in ``skipped``.

    Returns:
        ``image`` (B,3,S,S), ``face`` (B,3,F,F), ``caption`` list[str], ``identity`` (B,) int64,
        ``has_face`` (B,) bool, ``original_size`` and ``crop_top_left`` (B,2) int64, ``targets`` {name: (B,d)},
        ``skipped`` int, and ``index``/``caption_id`` (B,) when the source provides them.
    """
    skipped = sum(1 for s in samples if s is None)
    samples = [s for s in samples if s is not None]
    skipped += sum(s.get("_skipped", 0) for s in samples)
    if not samples:
        return {"skipped": skipped, "caption": []}
    batch: dict[str, Any] = {
        "image": torch.stack([s["image"] for s in samples]),
        "face": torch.stack([s["face"] for s in samples]),
        "caption": [s["caption"] for s in samples],
        "identity": torch.tensor([s["identity"] for s in samples], dtype=torch.long),
        "has_face": torch.tensor([s["has_face"] for s in samples], dtype=torch.bool),
        "original_size": torch.tensor([s["original_size"] for s in samples], dtype=torch.long),
        "crop_top_left": torch.tensor([s["crop_top_left"] for s in samples], dtype=torch.long),
        "skipped": skipped,
    }
    for key in ("index", "caption_id"):
        if all(key in s for s in samples):
            batch[key] = torch.tensor([s[key] for s in samples], dtype=torch.long)
    common = set.intersection(*(set(s["targets"]) for s in samples))
    batch["targets"] = {k: torch.stack([s["targets"][k] for s in samples]) for k in sorted(common)}
    return batch


class GlobalBatchSampler(Sampler[list[int]]):
    """An endless stream of this process's slices of global batches over a map-style data set.

    Args:
        length: data set size.
        batch_size: samples per process per batch.
        rank, world_size: this process and the number of processes.
        seed: shuffling seed (epoch ``e`` uses ``seed + e``).
        start_batch: global batches already consumed (resume).
        shuffle: permute each epoch.
    """

    def __init__(self, length: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 start_batch: int = 0, shuffle: bool = True):  # fmt: skip
        self.length, self.batch_size, self.rank, self.world_size = length, batch_size, rank, world_size
        self.seed, self.start_batch, self.shuffle = seed, start_batch, shuffle

    def _epoch(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.length))
        return torch.randperm(
            self.length, generator=torch.Generator().manual_seed(self.seed + epoch)
        ).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        global_batch = self.batch_size * self.world_size
        position = self.start_batch * global_batch  # index into the endless concatenation of epochs
        epoch, offset = divmod(position, self.length)
        order = self._epoch(epoch)
        while True:
            batch: list[int] = []
            while len(batch) < global_batch:
                if offset == self.length:
                    epoch, offset = epoch + 1, 0
                    order = self._epoch(epoch)
                take = min(global_batch - len(batch), self.length - offset)
                batch += order[offset : offset + take]
                offset += take
            yield batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]


class ShardStream(IterableDataset):
    """An endless stream of decoded samples from WebDataset shards, split between processes and workers.

    Corrupt samples are skipped; each yielded sample carries ``_skipped``, the number skipped since the last
    one (a truncated or unreadable shard counts as one). When identities are known and ``different_reference_photo`` is set, a sample's reference face is the
    previous face of the same identity seen by this worker (another photo of the person).
    """

    def __init__(self, shards: list[Path], *, image_size: int, face_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, batch_size: int = 1, start_batch: int = 0, different_reference_photo: bool = True):  # fmt: skip
        if not shards:
            raise ValueError("data.source: no shard-*.tar files found; run `faceclip prepare` first.")
        self.shards, self.image_size, self.face_size = shards, image_size, face_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.batch_size, self.start_batch = batch_size, start_batch
        self.different_reference_photo = different_reference_photo

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        slot, slots = self.rank * workers + worker, self.world_size * workers
        by_shard = len(self.shards) >= slots
        # Batches this worker already produced: the loader takes batches from workers in turn.
        to_skip = (self.start_batch - worker + workers - 1) // workers * self.batch_size
        skipped, last_face, epoch = 0, {}, 0
        while True:
            g = torch.Generator().manual_seed(self.seed + epoch)
            order = [self.shards[i] for i in torch.randperm(len(self.shards), generator=g).tolist()]
            mine = order[slot::slots] if by_shard else order
            seen = readable = 0  # readable: samples decoded this epoch (replayed or yielded)
            for shard in mine:
                broken: list[Exception] = []
                for raw in iter_raw_samples(shard, on_error=broken.append):
                    seen += 1
                    if not by_shard and (seen - 1) % slots != slot:
                        continue
                    # Used before a resume: replayed (image not decoded) only to refill the reference-face memory.
                    replay = to_skip > 0
                    try:
                        sample = decode_sample(raw, self.image_size, self.face_size, image=not replay)
                    except ValueError as err:
                        if not replay:
                            skipped += 1
                            logger.warning("skipping a corrupt sample in %s: %s", shard, err)
                        continue
                    readable += 1
                    if replay:
                        to_skip -= 1
                        if self.different_reference_photo and sample["identity"] >= 0:
                            last_face[sample["identity"]] = sample["face"]
                        continue
                    if self.different_reference_photo and sample["identity"] >= 0:
                        own = sample["face"]
                        sample["face"] = last_face.get(sample["identity"], own)
                        last_face[sample["identity"]] = own
                    sample["_skipped"], skipped = skipped, 0
                    yield sample
                # A truncated / unreadable shard counts as one skipped sample (how many were lost is unknown),
                # once: by the slot the next sample would have gone to, and not when replaying before a resume.
                if broken and to_skip == 0 and (by_shard or seen % slots == slot):
                    skipped += 1
            if readable == 0:
                raise NoReadableSampleError(
                    f"data.source: no readable sample in {len(mine)} shard(s) for this process; check the "
                    "shards (the warnings above name the corrupt ones) or re-run `faceclip prepare`."
                )
            epoch += 1


class ManifestDataset(Dataset):
    """A plain folder with ``manifest.jsonl``: one ``{"image", "caption", "identity"?, "face"?}`` per line.

    Paths are relative to the folder. ``face`` names an aligned reference face; without it the face is
    detected and aligned on the fly with :class:`faceclip.face.FaceAnalyzer`. Unreadable images and images
    without a face become ``None`` (skipped and counted by :func:`collate`).
    """

    def __init__(self, folder: str | Path, *, image_size: int, face_size: int):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        self.rows, self.lines = [], []  # rows and their 1-based line numbers in the manifest
        for number, line in enumerate(read_utf8(path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err.msg}): {line[:80]!r}") from err
            missing = [key for key in ("image", "caption") if not isinstance(row, dict) or key not in row]
            if missing:
                raise ValueError(
                    f'{path}:{number}: lacks {", ".join(missing)}; each line must be {{"image": ..., '
                    f'"caption": ..., "identity"?: ..., "face"?: ...}}, got {line[:80]!r}'
                )
            self.rows.append(row)
            self.lines.append(number)
        if not self.rows:
            raise ValueError(f'{path}: no rows; each line must be {{"image": ..., "caption": ...}}.')
        names = sorted({str(r["identity"]) for r in self.rows if r.get("identity") is not None})
        self.identities = {name: i for i, name in enumerate(names)}
        self.image_size, self.face_size = image_size, face_size
        self._analyzer = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        from faceclip.face import ImageLoadError, NoFaceFoundError, load_image
        from faceclip.training.shards import _resize_crop, _to_tensor

        row = self.rows[index]
        try:
            image = load_image(self.folder / row["image"])
            if row.get("face"):
                face = load_image(self.folder / row["face"]).resize((self.face_size,) * 2)
            else:
                if self._analyzer is None:
                    from faceclip.face import FaceAnalyzer

                    self._analyzer = FaceAnalyzer()
                face = self._analyzer.align(image, size=self.face_size).image
        except (ImageLoadError, NoFaceFoundError, OSError) as err:
            logger.warning("skipping %s:%d: %s", self.folder / MANIFEST, self.lines[index], err)
            return None
        cropped, original_size, crop = _resize_crop(image, self.image_size)
        identity = row.get("identity")
        return {
            "index": index,
            "image": _to_tensor(cropped),
            "face": _to_tensor(face),
            "caption": row["caption"],
            "identity": -1 if identity is None else self.identities[str(identity)],
            "has_face": True,
            "original_size": original_size,
            "crop_top_left": crop,
            "targets": {},
        }


def build_source(
    config: DataConfig, *, train: bool = True, target_dims: dict[str, int] | None = None
) -> Dataset | list[Path]:
    """The data set named by ``config.source``: a map-style data set, or the list of shards.

    ``train=False`` gives the held-out split of the synthetic source (other seed) used for evaluation;
    ``target_dims`` asks the synthetic source for precomputed targets (see ``SyntheticFaceDataset``).
    """
    source = config.source
    if source == "synthetic":
        return SyntheticFaceDataset(
            num_samples=config.synthetic_samples,
            num_identities=config.synthetic_identities,
            image_size=config.image_size,
            face_size=config.face_size,
            seed=config.seed if train else config.seed + 10_007,
            world_seed=config.seed,
            different_reference_photo=config.different_reference_photo,
            target_dims=target_dims,
        )
    path = Path(source)
    if path.is_dir() and list_shards(path):
        return list_shards(path)
    if path.is_dir() and (path / MANIFEST).is_file():
        return ManifestDataset(path, image_size=config.image_size, face_size=config.face_size)
    raise FileNotFoundError(
        f"data.source / --data: '{source}' is neither 'synthetic', a folder of shard-*.tar files (from "
        f"`faceclip prepare`), nor a folder with {MANIFEST}."
    )


def build_dataloader(
    config: DataConfig,
    *,
    rank: int = 0,
    world_size: int = 1,
    start_batch: int = 0,
    seed: int | None = None,
    target_dims: dict[str, int] | None = None,
) -> DataLoader:
    """An endless loader of this process's batches, starting after ``start_batch`` global batches."""
    source = build_source(config, target_dims=target_dims)
    seed = config.seed if seed is None else seed
    if isinstance(source, list):
        stream = ShardStream(
            source, image_size=config.image_size, face_size=config.face_size, rank=rank, world_size=world_size,
            seed=seed, batch_size=config.batch_size, start_batch=start_batch,
            different_reference_photo=config.different_reference_photo,
        )  # fmt: skip
        return DataLoader(
            stream, batch_size=config.batch_size, num_workers=config.num_workers, collate_fn=collate
        )
    sampler = GlobalBatchSampler(len(source), config.batch_size, rank, world_size, seed, start_batch)
    return DataLoader(source, batch_sampler=sampler, num_workers=config.num_workers, collate_fn=collate)


def eval_batch(config: DataConfig, samples: int, target_dims: dict[str, int] | None = None) -> dict[str, Any]:
    """A fixed evaluation batch: held-out synthetic samples, or the first ``samples`` of the data."""
    source = build_source(config, train=False, target_dims=target_dims)
    if isinstance(source, list):
        stream = ShardStream(source, image_size=config.image_size, face_size=config.face_size, seed=config.seed,
                             different_reference_photo=config.different_reference_photo)  # fmt: skip
        items = [s for s, _ in zip(stream, range(samples))]
    else:
        items = [source[i] for i in range(min(samples, len(source)))]
    return collate(items)
