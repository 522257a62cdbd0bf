"""proxy-init's log: plain or JSON lines on stderr (an init container's log is its stderr)."""
from __future__ import annotations

import json
import logging
import sys
import time

LOGGER = "kernsplit.init"
_STD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        doc.update({k: v for k, v in vars(record).items() if k not in _STD_ATTRS})
        return json.dumps(doc, sort_keys=False)


def make_logger(fmt: str, level: str, stream=None) -> logging.Logger:
    """The proxy-init logger, writing to `stream` (stderr by default, looked up at call time so a
    test runner's capture works). Handlers from an earlier call in the same process are replaced."""
    log = logging.getLogger(LOGGER)
    log.propagate = False
    log.setLevel(level.upper())
    for h in list(log.handlers):
        log.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("proxy-init: %(levelname)s: %(message)s"))
    log.addHandler(handler)
    return log
