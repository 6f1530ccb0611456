"""The evaluation manifest: one JSON object per line naming a generated image, its reference face and prompt.

A manifest lets :mod:`faceclip.evaluation` score images made by any tool, so methods can be compared on equal
terms. Relative paths are resolved against the manifest's folder. Example line::

    {"image": "out/alice_000_seed0.png", "reference": "faces/alice.jpg", "prompt": "a portrait of a person"}

Optional keys: ``identity`` (a name for per-identity tables; default: the reference file's stem), ``seed``
(an integer) and ``baseline`` (the same seed generated without the identity, for CLIP-I).

A line that cannot be read (not UTF-8, not JSON, a key missing) does not stop the others: it becomes a
:class:`ManifestProblem` carrying its 1-based line number. So does a line listing an image that an earlier line
lists already: each image is counted once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from faceclip.outputs import write_text_atomic
from faceclip.text_input import NotUTF8Error, decode_utf8

REQUIRED_KEYS = ("image", "reference", "prompt")
OPTIONAL_KEYS = ("identity", "seed", "baseline")


@dataclass(frozen=True)
class ManifestEntry:
    """One image to score.

    Attributes:
        line: 1-based line number in the manifest (used in every message about this entry).
        image: the generated image.
        reference: the reference face photo of the identity.
        prompt: the prompt the image was generated from.
        identity: the identity's name (default: the reference's file stem).
        seed: the generation seed, when known.
        baseline: the same seed generated without the identity (enables CLIP-I), when available.
    """

    line: int
    image: Path
    reference: Path
    prompt: str
    identity: str
    seed: int | None = None
    baseline: Path | None = None

    def to_json(self, relative_to: Path | None = None) -> dict:
        """The entry as a manifest line (paths relative to ``relative_to``, the manifest's folder, if given)."""
        record = {
            "image": relative_path(self.image, relative_to),
            "reference": relative_path(self.reference, relative_to),
            "prompt": self.prompt,
            "identity": self.identity,
        }
        if self.seed is not None:
            record["seed"] = self.seed
        if self.baseline is not None:
            record["baseline"] = relative_path(self.baseline, relative_to)
        return record


@dataclass(frozen=True)
class ManifestProblem:
    """A manifest line (or one of the files it names) that could not be used, and why."""

    line: int
    message: str
    image: str | None = None

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Manifest:
    """The readable entries of a manifest and the problems met while reading it."""

    entries: list[ManifestEntry]
    problems: list[ManifestProblem]


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read a JSONL manifest; bad lines become problems (with their line number), not exceptions.

    A line that is not UTF-8 or not a valid entry, or that lists an image an earlier line lists already (it is
    counted once, from the earlier line), is dropped with a problem. Only the syntax and the keys are checked
    here; whether each file exists and decodes is checked when it is scored, so every problem is still reported
    against its line.

    Raises:
        FileNotFoundError: the manifest itself does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"--manifest: '{path}' does not exist or is not a file; pass a JSONL manifest."
        )
    base = path.resolve().parent
    entries: list[ManifestEntry] = []
    problems: list[ManifestProblem] = []
    first: dict[Path, ManifestEntry] = {}  # resolved image -> the entry that listed it first
    for number, text in _lines(path):
        if isinstance(text, NotUTF8Error):
            problems.append(ManifestProblem(number, text.reason))
            continue
        try:
            entry = parse_line(text, number, base)
        except ValueError as err:
            problems.append(ManifestProblem(number, str(err)))
            continue
        earlier = first.setdefault(entry.image.resolve(), entry)
        if earlier is not entry:
            problems.append(
                ManifestProblem(number, _duplicate_message(entry, earlier), image=str(entry.image))
            )
            continue
        entries.append(entry)
    return Manifest(entries, problems)


def _duplicate_message(entry: ManifestEntry, earlier: ManifestEntry) -> str:
    """The problem of ``entry``, whose image ``earlier`` lists already (saying what else differs, if anything)."""
    fields = ("reference", "prompt", "identity", "seed", "baseline")
    differing = [name for name in fields if getattr(entry, name) != getattr(earlier, name)]
    also = f" with another {' and '.join(differing)}" if differing else ""
    return (
        f"lists the same image as line {earlier.line} ({entry.image.name}){also}; each image is counted once, "
        f"from line {earlier.line}, so this line is skipped"
    )


def _lines(path: Path) -> Iterator[tuple[int, str | NotUTF8Error]]:
    """``(number, text)`` of each line that is not blank or a comment, decoded on its own, so a line that is not
    UTF-8 (its error in place of the text) drops only itself."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = decode_utf8(raw, path, first_line=number)
            except NotUTF8Error as err:
                yield number, err
                continue
            if text.strip() and not text.lstrip().startswith("#"):
                yield number, text


def parse_line(text: str, line: int, base: Path) -> ManifestEntry:
    """Parse one manifest line; raises ``ValueError`` with a message that says what to fix."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"not valid JSON ({err.msg} at column {err.colno}); each line must be one JSON object"
        ) from None
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}; every line needs {', '.join(REQUIRED_KEYS)}")
    for key in ("image", "reference", "prompt"):
        if not isinstance(record[key], str) or (key != "prompt" and not record[key].strip()):
            raise ValueError(f"'{key}' must be a non-empty string, got {record[key]!r}")
    seed = record.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"'seed' must be an integer, got {seed!r}")
    baseline = record.get("baseline")
    if baseline is not None and not isinstance(baseline, str):
        raise ValueError(f"'baseline' must be a path string, got {baseline!r}")
    reference = _resolve(record["reference"], base)
    identity = record.get("identity")
    if identity is not None and not isinstance(identity, str):
        raise ValueError(f"'identity' must be a string, got {identity!r}")
    return ManifestEntry(
        line=line,
        image=_resolve(record["image"], base),
        reference=reference,
        prompt=record["prompt"],
        identity=identity or reference.stem,
        seed=seed,
        baseline=_resolve(baseline, base) if baseline else None,
    )


def write_manifest(entries: Iterable[ManifestEntry], path: str | os.PathLike) -> Path:
    """Write ``entries`` as a JSONL manifest, atomically.

    Paths are written relative to the manifest's folder (``../`` for files outside it), whatever the working
    directory they were given relative to, so :func:`read_manifest` finds the same files.
    """
    path = Path(path)
    base = path.resolve().parent
    lines = [json.dumps(entry.to_json(base), ensure_ascii=False) + "\n" for entry in entries]
    return write_text_atomic(path, "".join(lines))


def _resolve(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def relative_path(path: str | os.PathLike, base: str | os.PathLike | None) -> str:
    """``path`` as written in a manifest or report whose folder is ``base``: relative to ``base`` (with ``..``
    when it lies outside), so it reads back to the same file whatever the working directory; absolute where no
    relative path exists (another drive on Windows). Without ``base``, ``path`` as given."""
    if base is None:
        return str(path)
    resolved = Path(path).resolve()
    try:
        return Path(os.path.relpath(resolved, Path(base).resolve())).as_posix()
    except ValueError:
        return str(resolved)
