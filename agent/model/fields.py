"""Typed, path-aware access to one document's fields.

Parsers read fields through a `DocContext`, which reports problems with the file, object and full
field path, and remembers whether this document had an error (a document with any error is
excluded whole: half a split is worse than none).
"""
from __future__ import annotations

import ipaddress
import sys
from collections.abc import Mapping
from typing import Any

from kernsplit.agent.model.diagnostics import DiagnosticSink
from kernsplit.agent.model.documents import Document
from kernsplit.agent.model.names import (DEFAULT_CLUSTER_DOMAIN, DNS1123_SUBDOMAIN, NAMESPACE_NAME, SERVICE_NAME,
                                         NameRule, ServiceRef, name_problem, service_ref)

MISSING: Any = object()


class DocContext:
    def __init__(self, doc: Document, sink: DiagnosticSink, cluster_domain: str = DEFAULT_CLUSTER_DOMAIN) -> None:
        self.doc = doc
        self._sink = sink
        self.errors = 0
        self.cluster_domain = cluster_domain

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

    def check_identity(self, rule: NameRule = DNS1123_SUBDOMAIN) -> None:
        """metadata.name (required) and metadata.namespace, as the API server validates them for
        this kind; a bad one is an error, so nothing of the document is used."""
        meta = self.doc.data.get("metadata")
        if meta is not None and not isinstance(meta, Mapping):
            self.error("metadata", f"must be a mapping, not {_kind_of(meta)}")
            return
        meta = meta or {}
        if self.name(meta, "name", "metadata.name", rule, required=True) is None:
            return
        if meta.get("namespace") not in (None, ""):
            self.name(meta, "namespace", "metadata.namespace", NAMESPACE_NAME)

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
        # Names recur across thousands of objects (a Service's name in its slices, splits and
        # resolved ports; "TCP", "http"): one copy of each.
        return sys.intern(value)

    def name(self, parent: Mapping, key: str, path: str, rule: NameRule = SERVICE_NAME, *,
             required: bool = False) -> str | None:
        """An object name, checked as the API server checks it (`rule`)."""
        value = self.string(parent, key, path, required=required)
        if value is None:
            return None
        problem = name_problem(value, rule)
        if problem is not None:
            self.error(path, problem)
            return None
        return value

    def service(self, parent: Mapping, key: str, path: str, *, required: bool = False) -> str | None:
        """A Service in this document's namespace, named plainly or by DNS name (`name.ns.svc...`)."""
        value = self.string(parent, key, path, required=required)
        if value is None:
            return None
        ref = service_ref(value, self.cluster_domain)
        if not isinstance(ref, ServiceRef):
            self.error(path, ref)
            return None
        if ref.namespace is not None and ref.namespace != self.doc.namespace:
            self.error(path, f'"{value}" names namespace "{ref.namespace}", but this {self.doc.kind or "object"} '
                             f'is in "{self.doc.namespace}": a split and its services share one namespace')
            return None
        return sys.intern(ref.name)

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
