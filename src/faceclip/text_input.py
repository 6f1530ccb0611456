"""Reading text inputs (configs, manifests, captions) as UTF-8, with errors that name the file, line and column."""

from __future__ import annotations

import os
from pathlib import Path


class NotUTF8Error(ValueError):
    """Text that is not UTF-8 (e.g. saved as Latin-1): ``str()`` is ``"SOURCE:LINE: not UTF-8 text ..."``.

    Attributes:
        source: the file (or member) the text came from.
        line: 1-based line of the first byte that is not UTF-8.
        column: 1-based column (in characters) of that byte on its line.
        byte: the byte's value.
        utf16: the text starts with UTF-16's byte-order mark (so it is UTF-16, not a stray byte).
    """

    def __init__(self, source: str, line: int, column: int, byte: int, utf16: bool = False):
        self.source, self.line, self.column, self.byte, self.utf16 = source, line, column, byte, utf16
        super().__init__(f"{source}:{line}: {self.reason}")

    @property
    def reason(self) -> str:
        """What is wrong and what to do, without the location."""
        what, encoding = (
            ("UTF-16 text (it starts with UTF-16's byte-order mark)", "utf-16")
            if self.utf16
            else (f"not UTF-8 text (byte 0x{self.byte:02x} at column {self.column})", "latin1")
        )
        return f"{what}; save the file as UTF-8, e.g. `iconv -f {encoding} -t utf-8 OLD > NEW`"


def decode_utf8(data: bytes, source: str | os.PathLike, first_line: int = 1) -> str:
    """``data`` decoded as UTF-8; a byte-order mark at the start of a file (``first_line`` 1) is dropped.

    Args:
        data: the bytes of a whole file, or of the lines starting at ``first_line``.
        source: the file's name, for the message.
        first_line: the 1-based line number of ``data``'s first line in ``source``.

    Raises:
        NotUTF8Error: a byte that is not UTF-8, located by line and column.
    """
    try:
        return data.decode("utf-8-sig" if first_line == 1 else "utf-8")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        column = len(data[line_start : err.start].decode("utf-8", "replace")) + 1
        line = first_line + data.count(b"\n", 0, err.start)
        utf16 = first_line == 1 and data[:2] in (b"\xff\xfe", b"\xfe\xff")
        raise NotUTF8Error(str(source), line, column, data[err.start], utf16) from None


def read_utf8(path: str | os.PathLike) -> str:
    """The text of the file at ``path``, read as UTF-8 (see :func:`decode_utf8`)."""
    return decode_utf8(Path(path).read_bytes(), path)
