"""Diagnostics: what `validate` and the agent report about a configuration.

Every diagnostic names the file, the object (`Kind namespace/name`) and the field, so a user can go
straight to the line to fix.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[str, ...] = ("error", "warning", "info")


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: Severity
    file: str
    obj: str          # "Kind namespace/name", or "document N" before the kind is known
    field: str        # dotted path inside the object, e.g. "spec.backends[1].weight"
    message: str

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")

    def __str__(self) -> str:
        # "-" marks a part that does not apply (a missing file has no object or field yet).
        where = [part for part in (self.file, self.obj, self.field) if part and part != "-"]
        return ": ".join([*where, self.message])

    def to_json(self) -> dict:
        return {"severity": self.severity, "file": self.file, "object": self.obj,
                "field": self.field, "message": self.message, "text": str(self)}


class DiagnosticSink:
    """Collects diagnostics during one `load_config` call (never shared between calls).

    Identical diagnostics are kept once: resolution runs per port and per ClusterIP and would
    otherwise repeat the same warning about a backend.
    """

    def __init__(self) -> None:
        self._items: dict[Diagnostic, None] = {}

    def add(self, severity: Severity, file: str, obj: str, field: str, message: str) -> None:
        self._items.setdefault(Diagnostic(severity, file, obj, field, message), None)

    def freeze(self) -> tuple[Diagnostic, ...]:
        return tuple(self._items)
