"""Logging for kernsplit commands: plain or JSON lines on stderr, one setup shared by commands.

Modules log to children of the `kernsplit` logger (`kernsplit.agent`, `kernsplit.dataplane.iptables`);
structured fields go in `extra={...}` and appear as JSON keys.
"""
from __future__ import annotations

import json
import logging
import sys
import time

ROOT = "kernsplit"
FORMATS = ("plain", "json")
LEVELS = ("debug", "info", "warning", "error")
_STD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STD_ATTRS}


def _stamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": _stamp(record), "level": record.levelname.lower(), "logger": record.name,
               "msg": record.getMessage(), **_fields(record)}
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class PlainFormatter(logging.Formatter):
    """One line per message; structured fields are left to the JSON format (messages say it all)."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_stamp(record)} {record.levelname.lower():7} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(fmt: str = "plain", level: str = "info", stream=None) -> logging.Logger:
    """Configure the `kernsplit` logger tree (idempotent: replaces handlers of an earlier call)."""
    log = logging.getLogger(ROOT)
    log.propagate = False
    log.setLevel(level.upper())
    for h in list(log.handlers):
        log.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    log.addHandler(handler)
    return log
