"""The outcome of an import: counts and where the rejects went."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ImportReport:
    file: str
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    rejects_file: Path | None = None
    #: reason (its text before the first ':') -> count, for the summary
    reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "imported": self.imported, "updated": self.updated,
                "unchanged": self.unchanged, "rejected": self.rejected,
                "rejects_file": str(self.rejects_file) if self.rejects_file else None}

    def summary(self) -> str:
        text = (f"{self.file}: {self.imported} imported, {self.updated} updated, "
                f"{self.unchanged} unchanged, {self.rejected} rejected")
        if self.rejects_file:
            text += f" (see {self.rejects_file})"
        return text
