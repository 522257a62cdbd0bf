"""Typed, path-aware access to one document's fields.

Parsers read fields through a `DocContext`, which reports problems with the file, object and full
field path, and remembers whether this document had an error (a document with any error is
excluded whole: half a split is worse than none).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from kernsplit.agent.model.diagnostics import DiagnosticSink
from kernsplit.agent.model.documents import Document

MISSING: Any = object()


class DocContext:
    def __init__(self, doc: Document, sink: DiagnosticSink) -> None:
        self.doc = doc
        self._sink = sink
        self.errors = 0

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def _add(self, severity: str, field: str, message: str) -> None:
        self._sink.add(severity, self.doc.file, self.doc.obj, self.doc.field_prefix + field, message)

    def error(self, field: str, message: str) -> None:
        self.errors += 1
        self._add("error", field, message)

    def warning(self, field: str, message: str) -> None:
        self._add("warning", field, message)

    def info(self, field: str, message: str) -> None:
        self._add("info", field, message)

    # -- typed getters: return None (and report) when the value is unusable ------------------

    def mapping(self, parent: Mapping, key: str, path: str, *, required: bool = False) -> Mapping | None:
        value = parent.get(key, MISSING)
        if value is MISSING or value is None:
            if required:
                self.error(path, "is required")
            return None
        if not isinstance(value, Mapping):
            self.error(path, f"must be a mapping, not {_kind_of(value)}")
            return None
        return value

    def sequence(self, parent: Mapping, key: str, path: str, *, required: bool = False) -> list | None:
        value = parent.get(key, MISSING)
        if value is MISSING or value is None:
            if required:
                self.error(path, "is required")
            return None
        if not isinstance(value, list):
            self.error(path, f"must be a list, not {_kind_of(value)}")
            return None
        return value

    def string(self, parent: Mapping, key: str, path: str, *, required: bool = False) -> str | None:
        value = parent.get(key, MISSING)
        if value is MISSING or value is None or value == "":
            if required:
                self.error(path, "is required")
            return None
        if not isinstance(value, str):
            self.error(path, f'"{value}" must be a string')
            return None
        return value

    def port(self, parent: Mapping, key: str, path: str, *, required: bool = False) -> int | None:
        value = parent.get(key, MISSING)
        if value is MISSING or value is None:
            if required:
                self.error(path, "is required")
            return None
        return self.port_value(value, path)

    def port_value(self, value: Any, path: str) -> int | None:
        numeric_text = isinstance(value, str) and value.strip().isdigit()
        if isinstance(value, bool) or not (isinstance(value, int) or numeric_text):
            self.error(path, f'"{value}" is not a port number')
            return None
        number = int(value)
        if not 1 <= number <= 65535:
            self.error(path, f'"{value}" is not a valid port (1-65535)')
            return None
        return number

    def ip(self, value: Any, path: str) -> str | None:
        """Canonical text form of an IP address, or None (reported)."""
        if isinstance(value, str):
            try:
                return ipaddress.ip_address(value.strip()).compressed
            except ValueError:
                pass
        self.error(path, f'"{value}" is not an IP address')
        return None


def _kind_of(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string"}.get(type(value), type(value).__name__)
