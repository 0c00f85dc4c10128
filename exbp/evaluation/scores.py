"""The pointing game's output folder: pointing.json (every scored pair, kept current so that a
run can be resumed), and at the end the table as pointing.md and pointing.csv."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import OutputError
from ..exporters.atomic import write_atomically
from ..runs import SAVE_INTERVAL_S, create_writable_folder
from . import pointing

SCORES = "pointing.json"


class PointingScores:
    def __init__(self, out: Path, resume: bool = False):
        self.out = Path(out)
        create_writable_folder(self.out)
        self.path = self.out / SCORES
        self.done: dict[str, list[dict]] = {}
        self._saved_at = 0.0
        if self.path.exists():
            if not resume:
                raise OutputError(f"{self.out} holds earlier scores ({SCORES}); resume them, or "
                                  "choose another output folder")
            try:
                self.done = json.loads(self.path.read_text())["images"]
            except (OSError, ValueError, KeyError) as exc:
                raise OutputError(f"{self.path} cannot be read ({exc}); remove it or choose another "
                                  "output folder") from None

    def add(self, image: str, records: list[dict]) -> None:
        self.done[image] = records
        if time.monotonic() - self._saved_at >= SAVE_INTERVAL_S:
            self._write(SCORES, {"images": self.done, "complete": False})
            self._saved_at = time.monotonic()

    def finish(self, rows: list[dict], failures: dict[str, str]) -> None:
        self._write(SCORES, {"images": self.done, "table": rows, "failures": failures,
                             "tolerance_px": pointing.TOLERANCE, "complete": True})
        self._write("pointing.md", pointing.markdown(rows))
        self._write("pointing.csv", pointing.csv(rows))

    def _write(self, name: str, content) -> None:
        text = content if isinstance(content, str) else json.dumps(content, indent=1, allow_nan=False) + "\n"
        write_atomically(self.out / name, lambda file: file.write(text.encode("utf-8")))
