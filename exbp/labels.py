"""Class names: one per line, from a file or the model's ``exbp.labels`` metadata.

A line may list synonyms separated by ", " (ImageNet's WordNet names: "tabby, tabby cat"); a class
can be named by the whole line or by any synonym, ignoring case, or by a word that names exactly one
class (``"espresso"``). A word in several classes' names (``"cat"``) is refused with their list.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Mapping, Optional

from .errors import InputError, TargetError

METADATA_KEY = "exbp.labels"


class Labels:
    def __init__(self, names: list[str]):
        self.names = [name.strip() for name in names]
        self._index: dict[str, int] = {}
        for index, name in enumerate(self.names):
            for alias in (name, *self.synonyms(index)):
                self._index.setdefault(alias.lower(), index)

    def __len__(self) -> int:
        return len(self.names)

    def synonyms(self, index: int) -> list[str]:
        return [part.strip() for part in self.names[index].split(",") if part.strip()]

    def name(self, index: int) -> str:
        return self.names[index] if 0 <= index < len(self.names) else str(index)

    def short_name(self, index: int) -> str:
        synonyms = self.synonyms(index) if 0 <= index < len(self.names) else []
        return synonyms[0] if synonyms else str(index)

    def search(self, word: str) -> list[int]:
        """The classes with ``word`` in their name, ignoring case: as a whole word where any
        class has it so (``"cat"`` finds "tiger cat", not "wildcat"), else as any part of one."""
        word = word.strip().lower()
        if not word:
            return list(range(len(self.names)))
        whole = re.compile(rf"\b{re.escape(word)}\b")
        found = [i for i, name in enumerate(self.names) if whole.search(name.lower())]
        return found or [i for i, name in enumerate(self.names) if word in name.lower()]

    def index(self, name: str) -> int:
        found = self._index.get(name.strip().lower())
        if found is not None:
            return found
        matches = self.search(name)
        if len(matches) == 1:
            return matches[0]
        if matches:
            shown = ", ".join(f"{i} {self.names[i]!r}" for i in matches[:8])
            more = f" and {len(matches) - 8} more" if len(matches) > 8 else ""
            raise TargetError(f"class name {name!r} matches {len(matches)} classes: {shown}{more}; "
                              "name one of them or give its index")
        close = difflib.get_close_matches(name.lower(), list(self._index), n=3, cutoff=0.6)
        hint = (f"; did you mean {', '.join(repr(c) for c in close)}?" if close
                else "; give a class index or a name from the labels")
        raise TargetError(f"unknown class name {name!r}{hint}")

    @classmethod
    def of(cls, labels) -> "Labels":
        """Labels as given: a Labels, a list of names, or a file of them."""
        if isinstance(labels, Labels):
            return labels
        if isinstance(labels, (list, tuple)):
            return cls(list(labels))
        return cls.from_file(labels)

    @classmethod
    def from_file(cls, path: str | Path) -> "Labels":
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"labels file {path} could not be read ({exc}); give a UTF-8 text "
                             "file with one class name per line") from None
        return cls([line for line in text.splitlines() if line.strip()])

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> Optional["Labels"]:
        text = metadata.get(METADATA_KEY)
        return cls([line for line in text.splitlines() if line.strip()]) if text else None
