"""The CLIP tokenizer against the released encoder's token ids."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from faceclip.models.encoder import PROMPT_PREFIX
from faceclip.models.tokenizer import get_tokenizer

from .conftest import DATA


@pytest.mark.parametrize("case", ["A", "B", "C"])
def test_golden_token_ids(case):
    golden = np.load(DATA / "golden_seed0_subset.npz")
    prompts = json.loads((DATA / "golden_prompts.json").read_text())[case]
    has_face = golden[f"case{case}_face_exist_mask"]
    texts = [PROMPT_PREFIX + p if f else p for p, f in zip(prompts, has_face)]
    ids = get_tokenizer()(texts)
    assert ids.dtype == torch.long and ids.shape == (2, 77)
    assert torch.equal(ids, torch.from_numpy(golden[f"case{case}_input_ids"]))


def test_prefix_and_special_tokens():
    tok = get_tokenizer()
    assert tok.vocab_size == 49408
    assert tok(PROMPT_PREFIX)[0, :9].tolist() == [49406, 1125, 539, 320, 1014, 2533, 269, 49407, 0]
    assert tok("")[0, :3].tolist() == [49406, 49407, 0]


def test_special_tokens_are_spelled_as_open_clip_spells_them():
    """The released encoder's tokenizer knows "<end_of_text>", not OpenAI's "<|endoftext|>" (plain text there)."""
    tok = get_tokenizer()
    openai_spelling = tok("a <|endoftext|> b")[0].tolist()
    assert openai_spelling.index(49407) == len(tok.encode("a <| endoftext |> b")) + 1  # only the final EOT
    assert tok.encode("a <|endoftext|> b") == tok.encode("a <| endoftext |> b")
    assert tok.encode("a <end_of_text> b") == [320, 49407, 321]
    assert tok.encode("<START_OF_TEXT>") == [49406]  # lower-cased first, like every prompt


def test_cleaning_matches_open_clip_rules():
    tok = get_tokenizer()
    # HTML entities are unescaped (twice), whitespace collapsed, text lower-cased, ftfy fixes full-width text.
    assert tok.encode("Tom &amp;amp; Jerry") == tok.encode("tom & jerry")
    assert tok.encode("  A\tred\n\ncar ") == tok.encode("a red car")
    assert tok.encode("ＡＢＣ") == tok.encode("abc")
    assert tok.encode("café 42") == tok.encode("CAFÉ 42")


def test_truncation_keeps_end_token_and_warns_once(caplog):
    tok = get_tokenizer()
    long = " ".join(["word"] * 100)
    with caplog.at_level(logging.WARNING, logger="faceclip.models.tokenizer"):
        ids = tok([long, "short", long])
    assert ids[0, 76] == tok.end_id and ids[0, 0] == tok.start_id
    assert (ids[0] != 0).all()
    assert ids[1, 3:].eq(0).all()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "row 0" in warnings[0].getMessage() and "row 2" in warnings[0].getMessage()
