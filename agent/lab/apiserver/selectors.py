"""labelSelector and fieldSelector query parameters, in the forms the Kubernetes API accepts:
labels `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`; fields `path=v`,
`path==v`, `path!=v` on dotted paths (`metadata.name`, `metadata.namespace`, `involvedObject.name`...).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]

_SET = re.compile(r"^\s*(\S+?)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ = re.compile(r"^\s*([^!=\s]+)\s*(==|=|!=)\s*([^\s]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([^!=\s()]+)\s*$")


class SelectorError(ValueError):
    pass


def _terms(text: str) -> list[str]:
    """Splits on commas outside parentheses."""
    terms, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    return [t for t in (*terms, cur) if t.strip()]


def _label_term(term: str) -> Predicate:
    if m := _SET.match(term):
        key, op, values = m[1], m[2], {v.strip() for v in m[3].split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m := _EQ.match(term):
        key, op, value = m[1], m[2], m[3]
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if m := _EXISTS.match(term):
        negate, key = m[1] == "!", m[2]
        return lambda labels: (key in labels) != negate
    raise SelectorError(f"unable to parse requirement: {term.strip()!r}")


def label_selector(text: str | None) -> Predicate:
    preds = [_label_term(t) for t in _terms(text or "")]
    return lambda obj: all(p((obj.get("metadata") or {}).get("labels") or {}) for p in preds)


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, Mapping) else None
    return "" if cur is None else str(cur)


def field_selector(text: str | None) -> Predicate:
    preds: list[Predicate] = []
    for term in _terms(text or ""):
        m = _EQ.match(term)
        if not m:
            raise SelectorError(f"invalid field selector: {term.strip()!r}")
        path, op, value = m[1], m[2], m[3]
        if op == "!=":
            preds.append(lambda o, p=path, v=value: _field_value(o, p) != v)
        else:
            preds.append(lambda o, p=path, v=value: _field_value(o, p) == v)
    return lambda obj: all(p(obj) for p in preds)
