"""Writing a file so that it is either whole or absent: to a temporary name beside it, then a
rename, which is atomic on POSIX file systems. An interrupted run never leaves half a file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, IO


def write_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """``write(file)`` into a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            write(file)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path
