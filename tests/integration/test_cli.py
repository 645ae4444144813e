"""`sse-chat` against the real app on a loopback port (the simulator behind it)."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import httpx

from handlers.cli import run
from tests.conftest import AppFactory, SimulatorServer, free_port, settings_for
from tests.relay import Relay

REPLY = "Hello from the command line, friend."


def cli(*argv: str, stdin: str = "") -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def session_of(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("session: ")]
    assert lines, f"no session line on stderr: {stderr!r}"
    return lines[-1].split()[1]


def messages(url: str, session: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/sessions/{session}")
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["messages"]
    return result


def test_ask_streams_the_reply_to_stdout_and_the_session_to_stderr(
    live_app: AppFactory, simulator: SimulatorServer
) -> None:
    # GIVEN a server whose model answers REPLY
    url = live_app().url
    simulator.sim.script({"content": REPLY})

    # WHEN asking once
    code, out, err = cli("ask", "Say hello", "--url", url)

    # THEN stdout is exactly the reply, stderr names the session, and the turn was stored
    assert code == 0, err
    assert out == REPLY + "\n"
    session = session_of(err)
    stored = messages(url, session)
    assert [(m["role"], m["content"]) for m in stored] == [
        ("user", "Say hello"),
        ("assistant", REPLY),
    ]


def test_ask_with_session_continues_the_conversation(
    live_app: AppFactory, simulator: SimulatorServer
) -> None:
    url = live_app().url
    simulator.sim.script({"content": "first"}, {"content": "second"})
    _, _, err = cli("ask", "one", "--url", url)
    session = session_of(err)

    code, out, _ = cli("ask", "two", "--url", url, "--session", session)

    assert code == 0
    assert out == "second\n"
    assert [m["content"] for m in messages(url, session)] == ["one", "first", "two", "second"]


def test_ask_shows_tool_calls_on_stderr(live_app: AppFactory, simulator: SimulatorServer) -> None:
    # GIVEN the model calls the calculator, then (unscripted) summarises the result
    url = live_app().url
    simulator.sim.script(
        {"tool_calls": [{"name": "calculator", "arguments": '{"expression": "6*7"}'}]}
    )

    code, out, err = cli("ask", "What is 6*7?", "--url", url)

    # THEN the tool shows on stderr (name, then result) and stdout holds only the answer
    assert code == 0, err
    assert "⚙ calculator …" in err
    assert "⚙ calculator → " in err and "42" in err.split("⚙ calculator → ")[1]
    assert err.index("⚙ calculator …") < err.index("⚙ calculator → ")
    assert "42" in out and "⚙" not in out


def test_role_is_sent_to_the_server(live_app: AppFactory, simulator: SimulatorServer) -> None:
    url = live_app().url
    simulator.sim.script({"content": "ok"})

    code, _, err = cli("ask", "hi", "--url", url, "--role", "concise")

    assert code == 0, err
    system = simulator.log[-1]["body"]["messages"][0]
    assert system["role"] == "system" and "as few words" in system["content"]


def test_error_event_exits_1_with_the_message(
    live_app: AppFactory, simulator: SimulatorServer
) -> None:
    # GIVEN the provider rejects the request: the stream carries `started`, then `{"error"}`
    url = live_app().url
    simulator.sim.script({"fault": "401"})

    code, out, err = cli("ask", "hello", "--url", url)

    assert code == 1
    assert out == ""
    assert "error: " in err and "API key" in err
    assert "session: " in err  # the turn started, so the session exists


def test_stream_cut_mid_reply_exits_1_and_keeps_the_partial_output(
    live_app: AppFactory, simulator: SimulatorServer
) -> None:
    url = live_app().url
    text = "one two three four five six"
    simulator.sim.script({"content": text, "fault": "cut", "after_chunks": 3})

    code, out, err = cli("ask", "hello", "--url", url)

    assert code == 1
    assert out.endswith("\n") and out.strip() and text.startswith(out.rstrip("\n"))
    assert out.rstrip("\n") != text
    assert "error: " in err


def test_refused_request_exits_2_with_the_servers_message(
    live_app: AppFactory, simulator: SimulatorServer
) -> None:
    url = live_app(settings_for(simulator, max_prompt_chars=10)).url

    code, out, err = cli("ask", "x" * 11, "--url", url)

    assert code == 2
    assert out == ""
    assert "HTTP 413" in err
    body = httpx.post(f"{url}/chat", json={"prompt": "x" * 11}).json()
    assert body["error"] in err  # the server's own words, not a generic message


def test_unknown_session_exits_2(live_app: AppFactory) -> None:
    url = live_app().url
    code, _, err = cli("ask", "hi", "--url", url, "--session", "A" * 22)
    assert code == 2
    assert "HTTP 404" in err


def test_unreachable_server_exits_2() -> None:
    code, _, err = cli("ask", "hi", "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 2
    assert "cannot reach" in err


def test_json_prints_every_raw_event(live_app: AppFactory, simulator: SimulatorServer) -> None:
    url = live_app().url
    simulator.sim.script({"content": REPLY})

    code, out, _ = cli("ask", "hi", "--url", url, "--json")

    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["lifecycle"] == "started" and events[0]["session"]
    assert events[-1]["lifecycle"] == "done" and events[-1]["usage"]["completion_tokens"] > 0
    assert "".join(e["token"] for e in events if "token" in e) == REPLY


def test_chat_keeps_the_session_across_turns(
    live_app: AppFactory, simulator: SimulatorServer
) -> None:
    # GIVEN two replies queued
    url = live_app().url
    simulator.sim.script({"content": "Reply one."}, {"content": "Reply two."})

    # WHEN two lines are typed, then EOF
    code, out, err = cli("chat", "--url", url, stdin="first question\n\nsecond question\n")

    # THEN both replies stream, in one session holding the whole conversation
    assert code == 0, err
    assert out == "Reply one.\nReply two.\n"
    sessions = [line for line in err.splitlines() if line.startswith("session: ")]
    assert len(sessions) == 1, err  # printed once: the second turn reused it
    stored = messages(url, session_of(err))
    assert [m["content"] for m in stored] == [
        "first question",
        "Reply one.",
        "second question",
        "Reply two.",
    ]


def test_chat_new_starts_a_new_session(live_app: AppFactory, simulator: SimulatorServer) -> None:
    url = live_app().url
    simulator.sim.script({"content": "a"}, {"content": "b"})

    code, out, err = cli("chat", "--url", url, stdin="one\n/new\ntwo\n")

    assert code == 0
    assert out == "a\nb\n"
    sessions = [line.split()[1] for line in err.splitlines() if line.startswith("session: ")]
    assert len(sessions) == 2 and sessions[0] != sessions[1]


def test_console_script_streams_tokens_as_they_arrive(
    live_app: AppFactory, simulator: SimulatorServer
) -> None:
    # GIVEN a slow reply (10 words, 150 ms apart) and the URL only in SSE_CHAT_URL
    url = live_app().url
    words = " ".join(f"w{i}" for i in range(10))
    simulator.sim.script({"content": words, "delay_ms": 150})
    env = {**os.environ, "SSE_CHAT_URL": url}

    # WHEN the CLI runs as a process with stdout on a pipe
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "handlers.cli", "ask", "go"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    first = process.stdout.read(2)  # blocks until the first token is flushed
    first_at = time.monotonic() - started
    rest, err = process.communicate(timeout=30)
    total = time.monotonic() - started

    # THEN the first token came long before the end: output is flushed per token
    assert process.returncode == 0, err
    assert (first + rest).decode() == words + "\n"
    assert total - first_at > 0.8, (first_at, total)


MARKDOWN_REPLY = "# Plan\n\nUse **bold** steps:\n\n- first item\n- second item\n\n`x = 1`"
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\r")


def run_on_a_terminal(
    *argv: str, env: dict[str, str], stream: str = "stdout"
) -> tuple[int, str, str]:
    """The CLI as a process whose `stream` (stdout or stderr) is a pseudo-terminal; returns
    (code, what the terminal showed, what the other stream got)."""
    leader, follower = pty.openpty()
    # A real terminal size, so rich does not guess.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 80, 0, 0))
    on_tty = stream == "stdout"
    process = subprocess.Popen(
        [sys.executable, "-m", "handlers.cli", *argv],
        stdin=subprocess.DEVNULL,
        stdout=follower if on_tty else subprocess.PIPE,
        stderr=subprocess.PIPE if on_tty else follower,
        env=env,
    )
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        if not ready:
            process.kill()
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the process closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    other = process.stderr if on_tty else process.stdout
    assert other is not None
    rest = other.read().decode()
    process.wait(timeout=30)
    return process.returncode, b"".join(chunks).decode(), rest


def terminal_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TERM")}
    return env | {"SSE_CHAT_URL": url, "TERM": "xterm-256color", "COLUMNS": "80", "LINES": "40"}


def test_on_a_terminal_the_reply_is_rendered_markdown(
    live_app: AppFactory, simulator: SimulatorServer
) -> None:
    # GIVEN a Markdown reply, streamed slowly enough to be redrawn while it arrives
    url = live_app().url
    simulator.sim.script({"content": MARKDOWN_REPLY, "delay_ms": 20})

    # WHEN the CLI runs with stdout on a terminal
    code, screen, err = run_on_a_terminal("ask", "plan it", env=terminal_env(url))

    # THEN it is rendered: styled (escape codes), bullets, no Markdown markup left
    assert code == 0, err
    text = _ANSI.sub("", screen)
    assert "\x1b[" in screen
    assert "• first item" in text and "• second item" in text
    assert "bold" in text and "**" not in text and "# Plan" not in text
    assert "Plan" in text
    assert "\x1b[1A" in screen  # the cursor went back up: redrawn while streaming
    assert "session: " in err  # notes still go to stderr


def test_plain_on_a_terminal_prints_the_raw_text(
    live_app: AppFactory, simulator: SimulatorServer
) -> None:
    url = live_app().url
    simulator.sim.script({"content": MARKDOWN_REPLY})

    code, screen, err = run_on_a_terminal("ask", "plan it", "--plain", env=terminal_env(url))

    assert code == 0, err
    # The terminal turns \n into \r\n; otherwise the bytes are the reply's, unstyled.
    assert screen.replace("\r\n", "\n") == MARKDOWN_REPLY + "\n"


def test_piped_output_is_the_exact_reply_even_for_markdown(
    live_app: AppFactory, simulator: SimulatorServer
) -> None:
    url = live_app().url
    simulator.sim.script({"content": MARKDOWN_REPLY})

    result = subprocess.run(
        [sys.executable, "-m", "handlers.cli", "ask", "plan it"],
        capture_output=True,
        env=terminal_env(url),
        timeout=30,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == (MARKDOWN_REPLY + "\n").encode()


def test_on_a_terminal_without_rich_the_reply_is_plain_text(
    live_app: AppFactory, simulator: SimulatorServer, tmp_path: Path
) -> None:
    # GIVEN an environment where `import rich` fails (rich is an optional extra)
    url = live_app().url
    simulator.sim.script({"content": MARKDOWN_REPLY})
    (tmp_path / "rich").mkdir()
    (tmp_path / "rich" / "__init__.py").write_text("raise ImportError('rich is not installed')\n")
    env = terminal_env(url) | {"PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}

    # WHEN the CLI runs on a terminal
    code, screen, err = run_on_a_terminal("ask", "plan it", env=env)

    # THEN it still works, printing the raw text
    assert code == 0, err
    assert screen.replace("\r\n", "\n") == MARKDOWN_REPLY + "\n"


def test_reasoning_goes_to_stderr_never_into_the_reply(
    live_app: AppFactory, simulator: SimulatorServer
) -> None:
    url = live_app().url
    thought = "First the units, then the sum."
    simulator.sim.script({"reasoning": thought, "content": REPLY}, {"content": REPLY})

    code, out, err = cli("ask", "Think", "--url", url)
    assert code == 0, err
    assert out == REPLY + "\n"  # `> reply.txt` still captures exactly the reply
    assert thought in err and "\x1b[" not in err  # not a terminal: no styling

    code, out, err = cli("ask", "Think", "--url", url, "--hide-reasoning")
    assert code == 0 and out == REPLY + "\n"
    assert thought not in err


def test_on_a_terminal_reasoning_is_dimmed_on_stderr(
    live_app: AppFactory, simulator: SimulatorServer
) -> None:
    url = live_app().url
    simulator.sim.script({"reasoning": "Quietly thinking.", "content": REPLY})
    code, err, out = run_on_a_terminal(
        "ask", "Think", "--plain", env=terminal_env(url), stream="stderr"
    )
    assert code == 0
    assert out == REPLY + "\n"
    assert "\x1b[2mQuietly\x1b[22m" in err  # each delta dimmed as it arrives
    assert _ANSI.sub("", err).endswith("Quietly thinking.\n")


def test_stop_ends_the_running_reply_of_a_session(
    live_app: AppFactory, simulator: SimulatorServer
) -> None:
    url = live_app().url
    simulator.sim.script({"chunks": [f"w{i} " for i in range(200)], "delay_ms": 30})
    with httpx.stream("GET", f"{url}/chat", params={"prompt": "long"}, timeout=10) as response:
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        session = json.loads(first.removeprefix("data: "))["session"]
        code, _, err = cli("stop", session, "--url", url)
        assert code == 0 and "stopped" in err
        rest = [line for line in lines if line.startswith("data: ")]
    last = json.loads(rest[-1].removeprefix("data: "))
    assert last["lifecycle"] == "done" and last["finish_reason"] == "stopped"
    code, _, err = cli("stop", session, "--url", url)
    assert code == 0 and "no reply was running" in err
    code, _, err = cli("stop", "A" * 22, "--url", url)
    assert code == 2 and "404" in err


def test_a_stream_that_breaks_off_is_resumed_with_nothing_twice_or_missing(
    live_app: AppFactory, simulator: SimulatorServer
) -> None:
    url = live_app().url
    words = [f"w{i} " for i in range(40)]
    simulator.sim.script({"chunks": words, "delay_ms": 60})
    relay = Relay(int(url.rsplit(":", 1)[1]))
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "handlers.cli", "ask", "slowly", "--url", relay.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=terminal_env(url),
        )
        assert process.stdout is not None and process.stderr is not None
        seen = b""
        while seen.count(b"w") < 5:
            seen += process.stdout.read1(4096)
        relay.cut()  # the network drops mid-reply
        out = seen + process.stdout.read()
        err = process.stderr.read().decode()
        assert process.wait(timeout=30) == 0, err
    finally:
        relay.close()
    assert out.decode() == "".join(words) + "\n"
    assert "resuming" in err
    assert len(simulator.log) == 1  # one turn upstream, read in two parts


def test_no_resume_gives_up_when_the_stream_breaks_off(
    live_app: AppFactory, simulator: SimulatorServer
) -> None:
    url = live_app().url
    simulator.sim.script({"chunks": [f"w{i} " for i in range(40)], "delay_ms": 60})
    relay = Relay(int(url.rsplit(":", 1)[1]))
    try:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "handlers.cli", "ask", "slowly"),
                *("--url", relay.url, "--no-resume"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=terminal_env(url),
        )
        assert process.stdout is not None and process.stderr is not None
        seen = b""
        while seen.count(b"w") < 5:
            seen += process.stdout.read1(4096)
        relay.cut()
        process.stdout.read()
        err = process.stderr.read().decode()
        assert process.wait(timeout=30) == 1
    finally:
        relay.close()
    assert "resuming" not in err and "error:" in err
