"""The redactor: configured secret values, and any 8+ character run of one, never come out."""

from __future__ import annotations

import io
import json
import logging
import string
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.redaction import MIN_RUN, REDACTED, RedactingFilter, Redactor

KEY = "PlainSecretValue9876"


def runs_of(secret: str) -> list[str]:
    return [secret[i : i + MIN_RUN] for i in range(len(secret) - MIN_RUN + 1)]


def leaks(text: str, secret: str) -> list[str]:
    return [run for run in runs_of(secret) if run in text]


def test_the_whole_value_is_replaced() -> None:
    redact = Redactor([KEY])
    assert (
        redact(f"Incorrect API key provided: {KEY}.") == f"Incorrect API key provided: {REDACTED}."
    )


@pytest.mark.parametrize(
    "echo",
    [
        "test-SUPERSECRETKEY123456",  # the provider adds a prefix of its own
        "SUPERSECRETKEY123456-suffix",
        "SECRETKE",  # exactly 8 characters of it
        "xxSUPERSECRxx",
        "…ETKEY123456 was rejected",  # the tail, as a masking scheme would show more of it
        "key=SUPERSECRETKEY12345 (truncated)",
    ],
)
def test_any_run_of_8_characters_is_replaced(echo: str) -> None:
    secret = "SUPERSECRETKEY123456"
    out = Redactor([secret])(echo)
    assert leaks(out, secret) == [] and REDACTED in out


def test_shorter_runs_and_other_text_stay() -> None:
    redact = Redactor(["SUPERSECRETKEY123456"])
    assert redact("SUPERSE and 123456 and a normal sentence") == (
        "SUPERSE and 123456 and a normal sentence"
    )


def test_overlapping_and_repeated_echoes_become_one_marker_each() -> None:
    secret = "ABCDEFGHIJKLMNOP"
    out = Redactor([secret])(f"1 {secret}{secret} 2 CDEFGHIJK 3")
    assert out == f"1 {REDACTED} 2 {REDACTED} 3"


def test_several_secrets_and_known_key_prefixes() -> None:
    redact = Redactor(["FirstSecret12345", None, "", "   ", "SecondSecret6789"])
    out = redact("a FirstSecret12345 b SecondSecret6789 c sk-proj-abcdef0123 d key-zzzz9")
    assert out == f"a {REDACTED} b {REDACTED} c {REDACTED} d {REDACTED}"


def test_short_secrets_are_matched_whole_and_tiny_ones_ignored() -> None:
    redact = Redactor(["abc", "s3cr3t"])
    assert redact("abc s3cr3t") == f"abc {REDACTED}"


def test_secrets_learned_later_are_redacted_too() -> None:
    redact = Redactor()
    assert redact(KEY) == KEY
    redact.add(KEY)
    assert redact(KEY) == REDACTED


def test_scrub_reaches_into_structures() -> None:
    redact = Redactor([KEY])
    value = {"a": [KEY, 1, None, (f"x{KEY}", True)], "b": {"c": KEY[2:12]}}
    assert redact.scrub(value) == {
        "a": [REDACTED, 1, None, (f"x{REDACTED}", True)],
        "b": {"c": REDACTED},
    }


# Secrets and filler drawn apart from the marker's characters, so "[redacted]" itself can
# never spell a run of a secret.
_ALPHABET = string.ascii_uppercase + string.digits
_secret = st.text(alphabet=_ALPHABET, min_size=MIN_RUN, max_size=40)
_filler = st.text(alphabet=_ALPHABET + " -_:./", max_size=30)


@given(_secret, st.lists(st.tuples(_filler, st.integers(0, 40), st.integers(0, 40)), max_size=6))
def test_no_run_of_a_secret_survives(secret: str, pieces: list[tuple[str, int, int]]) -> None:
    text = "".join(filler + secret[start : start + size] for filler, start, size in pieces)
    assert leaks(Redactor([secret])(text), secret) == []


def record(msg: object, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("core.test", logging.WARNING, __file__, 1, msg, args or None, None)
    rec.__dict__.update(extra)
    return rec


def formatted(rec: logging.LogRecord) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s %(fields)s"))
    handler.addFilter(RedactingFilter(Redactor([KEY])))
    handler.handle(rec)
    return stream.getvalue()


def test_the_filter_redacts_message_arguments_and_extra_fields() -> None:
    out = formatted(record("provider said %s (%d)", f"bad key {KEY}", 401, fields={"k": KEY}))
    assert KEY not in out and leaks(out, KEY) == []
    assert out.startswith(f"provider said bad key {REDACTED} (401)")


def test_the_filter_redacts_a_non_string_argument_and_message() -> None:
    class Loud:
        def __str__(self) -> str:
            return f"<Loud {KEY}>"

    out = formatted(record("got %s", Loud(), fields=Loud()))
    assert leaks(out, KEY) == [] and "<Loud [redacted]>" in out
    out = formatted(record({"message": KEY[:10]}, fields=""))
    assert leaks(out, KEY) == []


def test_the_filter_redacts_a_traceback() -> None:
    try:
        raise ValueError(f"upstream echoed {KEY}")
    except ValueError:
        rec = record("failed", fields="")
        rec.exc_info = sys.exc_info()
    out = formatted(rec)
    assert "ValueError: upstream echoed [redacted]" in out and leaks(out, KEY) == []


def test_the_filter_keeps_uvicorn_access_arguments_a_tuple() -> None:
    rec = record('%s - "%s %s HTTP/%s" %d', "1.2.3.4:5", "GET", f"/chat?key={KEY}", "1.1", 200)
    RedactingFilter(Redactor([KEY])).filter(rec)
    assert isinstance(rec.args, tuple) and len(rec.args) == 5
    assert rec.args[2] == f"/chat?key={REDACTED}"


def test_powertools_json_lines_are_redacted() -> None:
    from aws_lambda_powertools import Logger

    stream = io.StringIO()
    name = f"redaction-test-{id(stream)}"
    logger = Logger(service=name, stream=stream, level="DEBUG")
    logging.getLogger(name).addFilter(RedactingFilter(Redactor([KEY])))
    logger.warning(f"turn failed: {KEY}", extra={"error": f"HTTP 400: test-{KEY}"})
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert leaks(json.dumps(line), KEY) == []
    assert line["message"] == f"turn failed: {REDACTED}"
    assert line["error"] == f"HTTP 400: test-{REDACTED}"
