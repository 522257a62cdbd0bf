"""Failures as the API server reports them: a metav1 Status with a code, a reason and a message."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ApiError(Exception):
    code: int
    reason: str                    # NotFound, AlreadyExists, Conflict, Invalid, BadRequest, Expired...
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def status(self) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason,
                **({"details": self.details} if self.details else {}), "code": self.code}


def not_found(what: str, name: str, group: str = "") -> ApiError:
    return ApiError(404, "NotFound", f'{what} "{name}" not found',
                    {"name": name, "group": group, "kind": what.split(".")[0]})


def invalid(kind: str, name: str, cause: str) -> ApiError:
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {cause}', {"name": name, "kind": kind})
