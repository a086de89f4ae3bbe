"""Structured log lines: `event=login user_id=7 outcome=success`.

The message reads as key=value in a terminal (LOG_FORMAT=plain), and the same fields go to
the record as attributes, so LOG_FORMAT=json (production) emits them as JSON keys.
"""

import json
import logging
import re

_BARE_VALUE = re.compile(r"^[\w.:/@+-]+$")


def log_event(logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields) -> None:
    pairs = " ".join(f"{name}={_format(value)}" for name, value in fields.items())
    logger.log(level, f"event={event} {pairs}".rstrip(), extra={"event": event, **fields})


def _format(value) -> str:
    text = str(value)
    # Quoted when it could be misread: a client-chosen username may hold spaces or `=`.
    return text if _BARE_VALUE.match(text) else json.dumps(text)
