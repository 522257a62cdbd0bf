"""Reading manifests: files or directories in, one `Document` per Kubernetes object out.

Accepts `.yaml`, `.yml` and `.json` files (directories are walked recursively, hidden entries
skipped: a mounted ConfigMap's `..data` links would otherwise be read twice), multi-document YAML
and `kind: List`. Empty documents are skipped; syntax errors become diagnostics naming the file
and line. YAML floats are read as `Decimal` so weights like `1.5` stay exact.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TextIO

import yaml

from kernsplit.agent.model.diagnostics import DiagnosticSink
from kernsplit.agent.model.quantity import decimal_or_none

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
DEFAULT_NAMESPACE = "default"


# libyaml's parser when present: the pure-Python one takes seconds for a few thousand objects.
_SafeBase = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _ExactLoader(_SafeBase):  # type: ignore[misc, valid-type]
    """Safe loader whose floats are Decimals built from the text as written."""


def _construct_decimal(loader: Any, node: yaml.ScalarNode) -> Any:
    number = decimal_or_none(str(loader.construct_scalar(node)).replace("_", ""))
    if number is not None:
        return number
    return yaml.SafeLoader.construct_yaml_float(loader, node)   # .inf, .nan, sexagesimal


_ExactLoader.add_constructor("tag:yaml.org,2002:float", _construct_decimal)


@dataclass(frozen=True)
class Document:
    """One Kubernetes object read from a file."""
    file: str
    index: int                  # 1-based document number in the file
    data: Mapping[str, Any]
    field_prefix: str = ""      # "items[3]." for an item of a `kind: List`

    @property
    def kind(self) -> str:
        return str(self.data.get("kind") or "")

    @property
    def api_version(self) -> str:
        return sys.intern(str(self.data.get("apiVersion") or ""))

    @property
    def metadata(self) -> Mapping[str, Any]:
        meta = self.data.get("metadata")
        return meta if isinstance(meta, Mapping) else {}

    @property
    def namespace(self) -> str:
        namespace = self.metadata.get("namespace")
        return sys.intern(str(namespace)) if namespace else DEFAULT_NAMESPACE

    @property
    def name(self) -> str:
        name = self.metadata.get("name")
        return sys.intern(str(name)) if name else ""

    @property
    def obj(self) -> str:
        return f"{self.kind or 'object'} {self.namespace}/{self.name or '<unnamed>'}"


def manifest_files(paths: Sequence[str | os.PathLike], sink: DiagnosticSink) -> list[str]:
    """Files to read, in a stable order. A file named explicitly is read whatever its suffix."""
    files: list[str] = []
    for raw in paths:
        path = os.fspath(raw)
        if os.path.isdir(path):
            files.extend(_walk(path))
        elif os.path.isfile(path):
            files.append(path)
        else:
            sink.add("error", path, "-", "-", "no such file or directory")
    return files


def _walk(top: str) -> Iterator[str]:
    for root, dirs, names in os.walk(top, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith(".") and name.endswith(MANIFEST_SUFFIXES):
                yield os.path.join(root, name)


def read_documents(paths: Sequence[str | os.PathLike], sink: DiagnosticSink) -> list[Document]:
    documents: list[Document] = []
    for file in manifest_files(paths, sink):
        documents.extend(read_file(file, sink))
    return documents


def read_file(file: str, sink: DiagnosticSink) -> list[Document]:
    return list(iter_file(file, sink))


def iter_file(file: str, sink: DiagnosticSink) -> Iterator[Document]:
    """The documents of one file, each parsed as the reading reaches it: a file of thousands of
    objects is never held whole, as text or as objects. Problems go to `sink`; documents before
    a syntax error have been yielded by then, so a caller that must not act on a broken file
    checks `sink` at the end."""
    try:
        with open(file, encoding="utf-8") as handle:
            if file.endswith(".json"):
                yield from _expand_all(file, _parse_json(file, handle, sink), sink)
            else:
                yield from _expand_all(file, _parse_yaml(file, handle, sink), sink)
    except (OSError, UnicodeDecodeError) as exc:
        sink.add("error", file, "-", "-", f"cannot read: {exc}")


def _expand_all(file: str, raw: Iterable[tuple[int, Any]], sink: DiagnosticSink) -> Iterator[Document]:
    for index, data in raw:
        yield from _expand(file, index, data, sink)


def _parse_json(file: str, handle: TextIO, sink: DiagnosticSink) -> list[tuple[int, Any]]:
    try:
        return [(1, json.load(handle, parse_float=Decimal))]
    except json.JSONDecodeError as exc:
        sink.add("error", file, "document 1", f"line {exc.lineno}, column {exc.colno}",
                 f"JSON syntax error: {exc.msg}")
        return []
    except ValueError as exc:   # a number of more than 4,300 digits (Python's limit)
        if isinstance(exc, UnicodeDecodeError):
            raise
        sink.add("error", file, "document 1", "-", f"cannot read: {exc}")
        return []


def _parse_yaml(file: str, handle: TextIO, sink: DiagnosticSink) -> Iterator[tuple[int, Any]]:
    index = 0
    try:
        for data in yaml.load_all(handle, Loader=_ExactLoader):   # noqa: S506 (safe loader subclass)
            index += 1
            yield index, data
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "-"
        problem = getattr(exc, "problem", None) or str(exc)
        # Documents before the broken one were read; the rest of the file cannot be trusted.
        sink.add("error", file, f"document {index + 1}", where, f"YAML syntax error: {problem}")
    except ValueError as exc:   # a number of more than 4,300 digits (Python's limit)
        if isinstance(exc, UnicodeDecodeError):
            raise
        sink.add("error", file, f"document {index + 1}", "-", f"cannot read: {exc}")


def _expand(file: str, index: int, data: Any, sink: DiagnosticSink) -> list[Document]:
    if data is None:
        return []
    if not isinstance(data, Mapping):
        # Not an object (a top-level list, a bare string): a broken manifest, not a foreign kind.
        sink.add("error", file, f"document {index}", "-",
                 f"is a {_kind_of(data)}, not a Kubernetes object (a mapping with apiVersion and kind)")
        return []
    if data.get("kind") == "List" or (str(data.get("kind", "")).endswith("List") and "items" in data):
        items = data.get("items") or []
        if not isinstance(items, list):
            sink.add("error", file, f"document {index}", "items", "must be a list")
            return []
        return [Document(file, index, _typed_item(data, item), f"items[{i}].")
                for i, item in enumerate(items) if isinstance(item, Mapping)]
    return [Document(file, index, data)]


def _kind_of(value: Any) -> str:
    return {list: "list", str: "string", int: "number", Decimal: "number", bool: "boolean"}.get(
        type(value), type(value).__name__)


def _typed_item(listing: Mapping[str, Any], item: Mapping[str, Any]) -> Mapping[str, Any]:
    """Items of a typed list from the API (`kind: ServiceList`) carry no kind/apiVersion of their own."""
    kind = str(listing.get("kind", ""))
    if item.get("kind") or kind == "List":
        return item
    return {"kind": kind.removesuffix("List"), "apiVersion": listing.get("apiVersion"), **item}
