"""A run folder: the maps of many images and the ``summary.json`` that records them.

The summary is kept current as the run goes (rewritten atomically, at most every
``SAVE_INTERVAL_S`` seconds and at the end), so an interrupted run leaves a true record of what it
finished, and ``resume=True`` skips that. A folder holding another run (a summary, or maps by exbp's
names) is refused unless the run is resumed or ``overwrite=True`` replaces it (its files, as its
summary lists them, are removed; without a summary, files of the same names are replaced). Without
``summary`` (a run that does not want the json format) nothing records the run, and it cannot be
resumed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .errors import OutputError
from .exporters import read_summary, write_summary

SUMMARY = "summary.json"
SAVE_INTERVAL_S = 1.0
# what exbp writes into a run folder, for recognising one that holds no summary
RUN_FILES = ("*_overlay.png", "*_heatmap.png", "*_sheet.png", "*.npy")
UNCOMPARED = ("device",)        # settings a resumed run may change: they do not change the maps


class RunFolder:
    def __init__(self, out: Path, settings: dict, resume: bool = False, overwrite: bool = False,
                 summary: bool = True):
        """``settings``: what decides the maps (model, methods, targets, layer, preprocessing);
        a resumed run must have the same."""
        if resume and not summary:
            raise OutputError("a run without its summary (the json format) cannot be resumed")
        self.out = Path(out)
        self.settings = json.loads(json.dumps(settings))     # as a summary holds them
        self.summary = summary
        self.records: list[dict] = []
        self.failures: list[dict] = []
        self.images: list[dict] = []
        self._saved_at = 0.0
        create_writable_folder(self.out)
        previous = self.out / SUMMARY
        if previous.exists():
            self._take_over(previous, resume, overwrite)
        elif not overwrite and any(next(self.out.glob(pattern), None) for pattern in RUN_FILES):
            raise OutputError(f"{self.out} holds maps of an earlier run; overwrite it, or choose "
                              "another output folder")

    @property
    def done(self) -> set[str]:
        """Images whose maps this folder already holds."""
        return {entry["image"] for entry in self.images}

    def _take_over(self, previous: Path, resume: bool, overwrite: bool) -> None:
        try:
            summary = read_summary(previous)
        except (OSError, ValueError) as exc:
            raise OutputError(f"{previous} cannot be read ({exc}); remove it or choose another "
                              "output folder") from None
        if resume:
            changed = sorted(key for key in self.settings
                             if key not in UNCOMPARED and summary.get(key) != self.settings[key])
            if changed:
                raise OutputError(f"the run in {self.out} used other settings ({', '.join(changed)}); "
                                  "resume it with the same ones, or overwrite it")
            self.records, self.images = summary.get("results", []), summary.get("images", [])
        elif overwrite:
            for record in summary.get("results", []):
                for name in record.get("files", []):
                    Path(name).unlink(missing_ok=True)
            for entry in summary.get("images", []):
                if entry.get("sheet"):
                    Path(entry["sheet"]).unlink(missing_ok=True)
        else:
            raise OutputError(f"{self.out} holds an earlier run ({SUMMARY}); resume it, overwrite "
                              "it, or choose another output folder")

    def add(self, image: str, top: list[dict], records: list[dict], sheet: str | None = None) -> None:
        self.images.append({"image": image, "top": top, **({"sheet": sheet} if sheet else {})})
        self.records.extend(records)
        self.save()

    def fail(self, image: str, error: str) -> None:
        self.failures.append({"image": image, "error": error})
        self.save()

    def save(self, final: bool = False, interrupted: bool = False) -> Path | None:
        """Rewrite the summary (every call when ``final``, else at most every SAVE_INTERVAL_S);
        its path, None without a summary."""
        path = self.out / SUMMARY
        now = time.monotonic()
        if self.summary and (final or now - self._saved_at >= SAVE_INTERVAL_S):
            try:
                write_summary(path, self.settings, self.records, self.failures, images=self.images,
                              complete=final and not interrupted, interrupted=interrupted)
            except OSError as exc:
                raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
            self._saved_at = now
        return path if self.summary else None


def create_writable_folder(out: Path) -> None:
    """The folder, created and known to be writable; OutputError (one line) otherwise."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".exbp-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputError(f"cannot write to the output folder {out}: {reason}; choose another "
                          "output folder") from None
