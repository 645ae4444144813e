"""Secret values out of text: error messages relayed to clients, and every log record.

A `Redactor` knows the configured secret values (the API key, the access key, AWS credentials,
values read from Secrets Manager) and replaces each of them, and any run of `MIN_RUN`
consecutive characters of one, wherever it appears; it also masks anything shaped like a
provider key (`sk-...`, `key-...`, `rk-...`) it was never told about. A provider echoing part of
a key (`test-SUPERSECRETKEY123456`), a key split by a masking scheme or quoted in a traceback
all come out as `[redacted]`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[redacted]"
MIN_RUN = 8  # a run of this many characters of a secret is treated as the secret
MIN_SECRET_CHARS = 4  # shorter values are no keys: redacting them would garble every line
_KEY_LIKE = re.compile(r"\b(?:sk|key|rk)-[A-Za-z0-9_\-*.]{4,}")


class Redactor:
    """Replaces known secret values (and 8+ character runs of them) and key-shaped text.

    Safe to share between threads: `add` swaps in new immutable sets, readers take a snapshot.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._lock = threading.Lock()
        self._short: tuple[str, ...] = ()  # secrets under MIN_RUN characters, matched whole
        self._runs: frozenset[str] = frozenset()  # every MIN_RUN-character run of the others
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        """Learn more secret values (None, blank and very short values are ignored)."""
        values = {s.strip() for s in secrets if s and len(s.strip()) >= MIN_SECRET_CHARS}
        short = {s for s in values if len(s) < MIN_RUN}
        runs = {s[i : i + MIN_RUN] for s in values - short for i in range(len(s) - MIN_RUN + 1)}
        if short <= set(self._short) and runs <= self._runs:
            return
        with self._lock:
            # Longest first, so a short secret inside a longer one cannot leave a tail behind.
            merged = set(self._short) | short
            self._short = tuple(sorted(merged, key=len, reverse=True))
            self._runs = self._runs | runs

    def __call__(self, text: str) -> str:
        runs, short = self._runs, self._short
        if runs and len(text) >= MIN_RUN:
            text = _mask_runs(text, runs)
        for secret in short:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _KEY_LIKE.sub(REDACTED, text)

    def scrub(self, value: Any) -> Any:
        """`value` with every string inside it (dicts, lists, tuples) redacted."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, Mapping):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub(v) for v in value]
        if type(value) is tuple:
            return tuple(self.scrub(v) for v in value)
        if value is None or isinstance(value, int | float | bool):
            return value
        text = str(value)
        clean = self(text)
        return value if clean == text else clean


def _mask_runs(text: str, runs: frozenset[str]) -> str:
    """Replace every stretch of text covered by a run of a secret with one REDACTED."""
    covered_to = -1  # text[:covered_to] is covered by the last match seen
    spans: list[tuple[int, int]] = []
    for i in range(len(text) - MIN_RUN + 1):
        if text[i : i + MIN_RUN] in runs:
            end = i + MIN_RUN
            if spans and i <= covered_to:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((i, end))
            covered_to = end
    if not spans:
        return text
    out, at = [], 0
    for start, end in spans:
        out += [text[at:start], REDACTED]
        at = end
    out.append(text[at:])
    return "".join(out)


_PLAIN_RECORD = logging.LogRecord("", 0, "", 0, "", (), None)
_STANDARD_ATTRIBUTES = frozenset(_PLAIN_RECORD.__dict__) | {"message", "asctime", "taskName"}
_SIMPLE = (str, int, float, bool, type(None))


class RedactingFilter(logging.Filter):
    """Redacts a record's message, arguments, extra fields, traceback and stack in place.

    Attached to handlers (and to loggers that log through their own handlers, like Powertools'),
    it runs before any formatter, JSON or plain. Never drops a record.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redact = self.redactor
        args = record.args
        if isinstance(record.msg, str) and (
            not args or (isinstance(args, tuple) and all(isinstance(a, _SIMPLE) for a in args))
        ):
            # Keep the arguments apart: some formatters (uvicorn's access log) read them.
            record.msg = redact(record.msg)
            if args:
                record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        elif isinstance(record.msg, str):
            record.msg, record.args = redact(record.getMessage()), None
        else:
            record.msg = redact.scrub(record.msg)
            if args:
                record.msg, record.args = redact(record.getMessage()), None
        for name, value in record.__dict__.items():
            if name not in _STANDARD_ATTRIBUTES and not isinstance(value, int | float | bool):
                record.__dict__[name] = redact.scrub(value)
        if record.exc_info:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = redact(text), None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_PROCESS = Redactor()


def process_redactor() -> Redactor:
    """The redactor the whole process logs through; secrets are added as they become known."""
    return _PROCESS
