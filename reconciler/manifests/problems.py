"""Errors and warnings as values: each knows where in the repository it points."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

FieldPath = tuple[str | int, ...]


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding. `line` and `column` are 1-based; 0 means "the whole file"."""

    file: str
    line: int
    column: int
    kind: str | None
    name: str | None
    field: str | None
    message: str
    severity: Severity = Severity.ERROR

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["severity"]
        return data

    def render(self) -> str:
        """`file:line:column: error: Kind/name: field: message`, like a compiler, for editors."""
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        subject = "/".join(p for p in (self.kind, self.name) if p)
        parts = [where, self.severity.value, subject, self.field, self.message]
        return ": ".join(p for p in parts if p)

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.file, self.line, self.column, self.message)


def render_path(path: FieldPath) -> str:
    """`("spec", "containers", 0, "image")` -> `spec.containers[0].image`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out
