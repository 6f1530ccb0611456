"""The prompt lists shipped with the package, and reading a user's prompt file.

Two lists of our own wording follow the field's protocol (identities x prompts x seeds):

- ``portrait``: prompts that keep the face large and visible, so ID-Sim is measured on every image;
- ``scenes``: varied scenes, styles and clothing, to measure prompt following (CLIP-T) with the identity kept.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from faceclip.text_input import NotUTF8Error, read_utf8

PROMPT_SETS = ("portrait", "scenes")
"""Names of the shipped prompt lists (``faceclip/evaluation/prompts/<name>.txt``)."""


def load_prompts(source: str | os.PathLike) -> list[str]:
    """Read prompts from a text file (one per line; blank lines and ``#`` comments skipped) or a shipped list.

    Args:
        source: a path to a text file, or the name of a shipped list (see :data:`PROMPT_SETS`).

    Raises:
        FileNotFoundError: ``source`` is neither an existing file nor a shipped list's name.
        ValueError: the file holds no prompt, or is not UTF-8 (the message names the line).
    """
    path = Path(source).expanduser()
    if path.is_file():
        try:
            text = read_utf8(path)  # a byte-order mark is not part of the first prompt
        except NotUTF8Error as err:
            raise ValueError(f"--prompts: {err}") from None
    elif str(source) in PROMPT_SETS:
        text = (
            resources.files("faceclip.evaluation")
            .joinpath("prompts", f"{source}.txt")
            .read_text(encoding="utf-8")
        )
    else:
        raise FileNotFoundError(
            f"--prompts: '{source}' is neither a file nor a shipped prompt list; "
            f"pass a text file with one prompt per line, or one of: {', '.join(PROMPT_SETS)}."
        )
    prompts = [
        line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    if not prompts:
        raise ValueError(
            f"--prompts: '{source}' holds no prompt (one prompt per line; '#' starts a comment)."
        )
    return prompts
