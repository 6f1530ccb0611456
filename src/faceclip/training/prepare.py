"""Data preparation: photos with captions -> detected, aligned faces -> WebDataset shards.

Input: a folder of images with sidecar ``.txt`` captions (``photo.jpg`` + ``photo.txt``; sub-folder names are
identity labels with ``identity_from_folder``), or a JSONL manifest with ``{"image", "caption", "identity"?}``
per line (image paths relative to the manifest). Items are sorted, cut into shards of ``samples_per_shard``,
and shard ``s`` belongs to job ``s % num_shards``, so many jobs can run at once without talking to each other.
Finished shards are skipped on a re-run, so an interrupted job resumes where it stopped.

The first job records what the folder is made of in ``prepare.json`` (a fingerprint of the item list, the
identity labels, ``samples_per_shard``, ``face_size`` and the image-target towers). A later job with another
input or other settings is refused (:class:`PrepareMismatchError`) instead of mixing two data sets in one
folder; ``overwrite=True`` deletes the old shards and starts over. ``identities.json`` is written once.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from faceclip.outputs import write_text_atomic
from faceclip.text_input import read_utf8
from faceclip.training.shards import SHARD_PATTERN, encode_sample, encode_targets, write_shard

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
RECORD = "prepare.json"
IMAGE_TARGET_VIEW = "centre-crop"  # image targets see the photo's central square (targets.clip_preprocess)
IDENTITIES = "identities.json"


class PrepareMismatchError(ValueError):
    """The output folder already holds shards of another input or made with other settings."""


@dataclass(frozen=True)
class Item:
    image: Path
    caption: str
    identity: str | None = None


@dataclass
class PrepareReport:
    """What one job did."""

    shards_written: list[int] = field(default_factory=list)
    shards_skipped: list[int] = field(default_factory=list)  # already finished (resume)
    samples_written: int = 0
    samples_skipped: int = 0  # unreadable image or no usable face
    skipped_reasons: dict[str, int] = field(default_factory=dict)

    def add(self, shard: int, stats: dict) -> None:
        """Count a shard just written (``stats`` as in its ``shard-NNNNNN.json``)."""
        self.shards_written.append(shard)
        self.samples_written += stats["written"]
        self.samples_skipped += stats["skipped"]
        for reason, n in stats["reasons"].items():
            self.skipped_reasons[reason] = self.skipped_reasons.get(reason, 0) + n


def list_items(source: str | Path, identity_from_folder: bool = False) -> list[Item]:
    """The items of a folder with sidecar captions or of a JSONL manifest, sorted by image path.

    Raises:
        FileNotFoundError: ``source`` does not exist, or holds no captioned image.
        ValueError: a manifest line is not valid JSON or lacks ``image``/``caption``, or a manifest or caption file
            is not UTF-8 (the file and line are given).
    """
    source = Path(source)
    items: list[Item] = []
    if source.is_file():
        for number, line in enumerate(read_utf8(source).splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                items.append(
                    Item(source.parent / row["image"], str(row["caption"]), _identity(row.get("identity")))
                )
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(
                    f'{source}:{number}: expected {{"image": ..., "caption": ...}}, got {line[:80]!r}'
                ) from err
    elif source.is_dir():
        for image in source.rglob("*"):
            caption = image.with_suffix(".txt")
            if image.suffix.lower() in IMAGE_SUFFIXES and caption.is_file():
                identity = image.parent.name if identity_from_folder and image.parent != source else None
                items.append(Item(image, read_utf8(caption).strip(), identity))
    else:
        raise FileNotFoundError(f"INPUT: '{source}' is neither a folder nor a JSONL manifest.")
    if not items:
        raise FileNotFoundError(
            f"INPUT: no captioned images in '{source}' (each image needs a sidecar .txt caption)."
        )
    return sorted(items, key=lambda item: str(item.image))


def _identity(value) -> str | None:
    return None if value is None else str(value)


def _check_arguments(samples_per_shard: int, shard_index: int, num_shards: int, face_size: int) -> None:
    """Refuse bad numbers before anything is written (a ``prepare.json`` would block the corrected re-run)."""
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"--shard-index must be in [0, --num-shards={num_shards}), got {shard_index}.")
    if samples_per_shard < 1:
        raise ValueError(f"--samples-per-shard must be >= 1, got {samples_per_shard}.")
    if not 16 <= face_size <= 2048:
        raise ValueError(f"--face-size must be from 16 to 2048 pixels, got {face_size}.")


def prepare_shards(
    items: list[Item],
    out_dir: str | Path,
    *,
    analyzer,
    samples_per_shard: int = 1000,
    shard_index: int = 0,
    num_shards: int = 1,
    face_size: int = 448,
    image_towers: dict[str, object] | None = None,
    image_target_sources: dict[str, str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> PrepareReport:
    """Write this job's shards.

    Args:
        items: all items (every job must see the same list; see :func:`list_items`).
        out_dir: the shard folder.
        analyzer: a :class:`faceclip.face.FaceAnalyzer` (detect + align).
        samples_per_shard: items per shard (before skipping).
        shard_index, num_shards: this job handles shards ``s`` with ``s % num_shards == shard_index``.
        face_size: side of the aligned face.
        image_towers: ``{"l": ImageTargetTower, ...}`` to store precomputed image targets ``image_<b>``.
        image_target_sources: ``{"l": "hub id or folder", ...}``, the towers' names (recorded in ``prepare.json``).
        overwrite: if the folder holds shards of another input or other settings, delete them and start over
            (without it, that is a :class:`PrepareMismatchError`).
        progress: show a progress bar.

    Raises:
        PrepareMismatchError: ``out_dir`` was prepared from another item list or with other settings.
    """
    from tqdm.auto import tqdm

    _check_arguments(samples_per_shard, shard_index, num_shards, face_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = _folder_record(items, samples_per_shard, face_size, image_towers, image_target_sources)
    _claim_folder(out, record, overwrite)
    total = (len(items) + samples_per_shard - 1) // samples_per_shard
    mine = [s for s in range(total) if s % num_shards == shard_index]
    report = PrepareReport()
    bar = tqdm(total=sum(min(samples_per_shard, len(items) - s * samples_per_shard) for s in mine),
               disable=not progress, desc="prepare")  # fmt: skip
    for shard in mine:
        path = out / SHARD_PATTERN.format(shard)
        chunk = items[shard * samples_per_shard : (shard + 1) * samples_per_shard]
        if path.is_file():
            report.shards_skipped.append(shard)
            bar.update(len(chunk))
            continue
        prepared = []
        for offset, item in enumerate(chunk):
            key = f"{shard:06d}{offset:06d}"
            prepared.append(_prepare_one(item, key, analyzer, face_size, record["identities"], image_towers))
            bar.update(1)
        report.add(shard, _write_prepared(path, prepared))
    bar.close()
    return report


def _folder_record(
    items: list[Item], samples_per_shard: int, face_size: int, image_towers, image_target_sources
):
    """What ``prepare.json`` records: the item list's fingerprint, the settings, the identity labels."""
    names = sorted({i.identity for i in items if i.identity is not None})
    record = {
        "items": len(items),
        "fingerprint": fingerprint(items),
        "samples_per_shard": samples_per_shard,
        "face_size": face_size,
        "image_targets": dict(sorted((image_target_sources or {k: "?" for k in image_towers or {}}).items())),
        "identities": {name: k for k, name in enumerate(names)},
    }
    if image_towers:  # shards of older versions hold targets of the photo squashed to a square
        record["image_target_view"] = IMAGE_TARGET_VIEW
    return record


def _write_prepared(path: Path, prepared: list[tuple[dict | None, str | None]]) -> dict:
    """Write one shard of the prepared samples and its ``.json`` counts; returns the counts."""
    stats = {"written": 0, "skipped": 0, "reasons": {}}
    samples = []
    for sample, reason in prepared:
        if sample is None:
            stats["skipped"] += 1
            stats["reasons"][reason] = stats["reasons"].get(reason, 0) + 1
        else:
            samples.append(sample)
    stats["written"] = write_shard(path, samples)
    _write_json(path.with_suffix(".json"), stats)
    return stats


def fingerprint(items: list[Item]) -> str:
    """SHA-256 over each item's resolved image path, file size, caption and identity (in list order)."""
    digest = hashlib.sha256()
    for item in items:
        try:
            size = item.image.stat().st_size
        except OSError:
            size = -1
        line = json.dumps([str(item.image.resolve()), size, item.caption, item.identity])
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def _claim_folder(out: Path, record: dict, overwrite: bool) -> None:
    """Check ``out`` against ``record`` (or start it); never rewrites ``identities.json`` of existing shards."""
    record_path = out / RECORD
    old = json.loads(record_path.read_text()) if record_path.is_file() else None
    shards = sorted(out.glob("shard-*.tar"))
    if old == record:
        if not (out / IDENTITIES).is_file():
            _write_json(out / IDENTITIES, record["identities"])
        return
    if old is None and not shards:
        _write_json(out / IDENTITIES, record["identities"])
        _write_json(record_path, record)
        return
    if old is None:
        problem = f"it holds {len(shards)} shard(s) but no {RECORD} saying what they were made from"
    else:
        differ = [k for k in record if old.get(k) != record[k]]
        what = {"fingerprint": "the item list", "items": "the number of items",
                "image_target_view": "the image targets' preprocessing (older shards squash the photo)"}  # fmt: skip
        problem = "it was prepared from a different input or settings (" + ", ".join(
            f"{what.get(k, k)}: {old.get(k)!r} -> {record[k]!r}" if k in ("items", "samples_per_shard", "face_size")
            else what.get(k, k) for k in differ
        ) + ")"  # fmt: skip
    if not overwrite:
        raise PrepareMismatchError(
            f"--out: '{out}' cannot be extended: {problem}. Adding its shards to this input would drop, "
            "duplicate or mislabel samples. Use a new --out folder, or pass --overwrite to delete its shards "
            "and start over."
        )
    logger.warning("--overwrite: deleting %d shard(s) in %s (%s)", len(shards), out, problem)
    for path in [*shards, *out.glob("shard-*.json"), out / IDENTITIES, record_path]:
        path.unlink(missing_ok=True)
    _write_json(out / IDENTITIES, record["identities"])
    _write_json(record_path, record)


def _prepare_one(item: Item, key: str, analyzer, face_size: int, identities: dict[str, int], image_towers):
    from PIL import Image

    from faceclip.face import ImageLoadError, NoFaceFoundError, load_image, to_tensor

    try:
        image = load_image(item.image)
    except ImageLoadError as err:
        logger.warning("skipping %s: %s", item.image, err)
        return None, "unreadable image"
    try:
        aligned = analyzer.align(image, size=face_size)
    except NoFaceFoundError:
        logger.info("skipping %s: no face found", item.image)
        return None, "no face"
    face = aligned.face
    meta = {
        "identity": identities.get(item.identity) if item.identity is not None else None,
        "identity_name": item.identity,
        "detection": {
            "box": [float(v) for v in face.box],
            "score": float(face.score),
            "landmarks": [[float(x), float(y)] for x, y in face.landmarks],
        },
        "source": str(item.image),
        "width": image.width,
        "height": image.height,
    }
    sample = encode_sample(key, image, item.caption, aligned.image, meta)
    if image_towers:
        # The targets of the image as stored (the JPEG training decodes), through the towers' own
        # preprocessing (faceclip.training.targets.clip_preprocess), as in training.
        pixels = to_tensor(Image.open(io.BytesIO(sample["jpg"])).convert("RGB"))[None]
        targets = {f"image_{name}": tower(pixels)[0] for name, tower in image_towers.items()}
        sample["targets.st"] = encode_targets(targets)
    return sample, None


def _write_json(path: Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=1))
