"""CLIP text tokenization, identical to the released FaceCLIP encoder's.

Both FaceCLIP text towers use the OpenAI CLIP vocabulary: text is cleaned (``ftfy.fix_text``, HTML
unescaped twice, whitespace collapsed, lower-cased), split into words, byte-level BPE-encoded with the
merges file shipped in ``faceclip/models/vocab/``, wrapped in start/end-of-text tokens, cut to the context
length (start + 75 tokens + end) and zero-padded.
"""

from __future__ import annotations

import functools
import gzip
import html
import itertools
import logging
from pathlib import Path

import ftfy
import regex
import torch

logger = logging.getLogger(__name__)

BPE_PATH = Path(__file__).parent / "vocab" / "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2
# Spelled as open_clip spells them (not OpenAI's "<|startoftext|>"): a prompt that contains one of these strings
# gets the special id there, as in the released encoder.
START_TOKEN = "<start_of_text>"
END_TOKEN = "<end_of_text>"
PAD_ID = 0

# Special tokens, contractions, letter runs, single digits, runs of other non-space characters.
_WORD_PATTERN = regex.compile(
    r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


def clean_text(text: str) -> str:
    """Normalise a prompt the way the released encoder does (ftfy, HTML unescape x2, whitespace, lower)."""
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return regex.sub(r"\s+", " ", text).strip().lower()


def _byte_alphabet() -> dict[int, str]:
    """Map every byte to a printable unicode character (printable Latin-1 bytes map to themselves).

    The dict order is the vocabulary order: the printable bytes first, then the others (as ``chr(256 + i)``).
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in mapping]
    mapping.update({b: chr(256 + i) for i, b in enumerate(others)})
    return mapping


class CLIPTokenizer:
    """Byte-level BPE tokenizer with the CLIP vocabulary (49,408 ids).

    Args:
        merges_path: gzip file of BPE merges (first line is a header).
        context_length: length of every encoded row, start and end tokens included.
    """

    def __init__(self, merges_path: str | Path = BPE_PATH, context_length: int = 77) -> None:
        with gzip.open(merges_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")[1 : NUM_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        self.byte_alphabet = _byte_alphabet()
        symbols = list(self.byte_alphabet.values())
        vocab = (
            symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [START_TOKEN, END_TOKEN]
        )
        self.vocab = {token: i for i, token in enumerate(vocab)}
        self.merge_ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.context_length = context_length
        self.start_id = self.vocab[START_TOKEN]
        self.end_id = self.vocab[END_TOKEN]
        self._cache: dict[str, list[str]] = {START_TOKEN: [START_TOKEN], END_TOKEN: [END_TOKEN]}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _bpe(self, word: str) -> list[str]:
        """Merge the symbols of one (byte-mapped) word, lowest-ranked pair first."""
        if word in self._cache:
            return self._cache[word]
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = set(itertools.pairwise(parts))
            best = min(pairs, key=lambda p: self.merge_ranks.get(p, float("inf")))
            if best not in self.merge_ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._cache[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without start/end tokens and without truncation."""
        ids = []
        for word in _WORD_PATTERN.findall(clean_text(text)):
            mapped = "".join(self.byte_alphabet[b] for b in word.encode("utf-8"))
            ids.extend(self.vocab[piece] for piece in self._bpe(mapped))
        return ids

    def __call__(self, texts: str | list[str]) -> torch.Tensor:
        """Encode texts into a ``(B, context_length)`` int64 tensor (start, tokens, end, zero padding).

        Texts longer than ``context_length`` tokens are cut to start + ``context_length - 2`` tokens + end;
        one warning lists the truncated rows.
        """
        if isinstance(texts, str):
            texts = [texts]
        out = torch.full((len(texts), self.context_length), PAD_ID, dtype=torch.long)
        truncated = []
        for row, text in enumerate(texts):
            ids = [self.start_id, *self.encode(text), self.end_id]
            if len(ids) > self.context_length:
                truncated.append((row, len(ids)))
                ids = [*ids[: self.context_length - 1], self.end_id]
            out[row, : len(ids)] = torch.tensor(ids)
        if truncated:
            rows = ", ".join(f"row {r} ({n} tokens)" for r, n in truncated)
            logger.warning(
                "Prompt too long for the %d-token context: %s; keeping the first %d tokens of each.",
                self.context_length,
                rows,
                self.context_length - 2,
            )
        return out


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> CLIPTokenizer:
    """The shared CLIP tokenizer (built once per process from the packaged merges file)."""
    return CLIPTokenizer()
