"""`sse-chat`: a terminal client for the chat service (the tutorial's "Fetch Streamed + Parse SSE").

    sse-chat ask "What is 6*7?" [--url URL] [--session ID] [--role R] [--json] [--plain] [--key KEY]
    sse-chat chat [--url URL] [--session ID] [--role R] [--json] [--plain] [--key KEY]

Tokens go to stdout as they arrive; tool calls, the session id and errors go to stderr, so
`sse-chat ask ... > reply.txt` captures exactly the reply. When stdout is a terminal and `rich`
is installed (the `cli` extra), the reply is shown as rendered Markdown, redrawn while it
streams; `--plain` prints the raw text instead. Exit codes: 0 the turn finished,
1 the server sent an `{"error"}` event (or the stream broke off), 2 the request was refused
(HTTP 4xx/5xx, with the server's message) or the server could not be reached, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import httpx
from httpx_sse import SSEError, connect_sse

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "SSE_CHAT_URL"
KEY_ENV = "SSE_CHAT_KEY"

EXIT_OK = 0
EXIT_TURN_FAILED = 1
EXIT_REFUSED = 2
EXIT_INTERRUPTED = 130

# Connecting should be quick; between events the server sends `: ping` at least every 15 s.
TIMEOUT = httpx.Timeout(10.0, read=60.0)
_TOOL_OUTPUT_CHARS = 200
_DIM, _UNDIM = "\x1b[2m", "\x1b[22m"  # SGR faint on and off


@dataclass(slots=True)
class TurnResult:
    """How one turn ended and the session it belongs to (None if the server never said)."""

    exit_code: int
    session: str | None = None
    status_code: int | None = None


class _Terminal:
    """Writes a streamed reply to `out` and notes to `err` without garbling either.

    Tokens rarely end in a newline, so a note written to the same terminal mid-line would land
    after the partial reply; when both streams are one terminal, the note starts on a new line.
    """

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err
        self.mid_line = False
        self.shared_tty = _isatty(out) and _isatty(err)
        self.dim = _isatty(err)
        self.mid_reasoning = False

    def reasoning(self, text: str) -> None:
        """The model's reasoning, to stderr (dimmed on a terminal): never part of the reply."""
        if not text:
            return
        if self.mid_line and self.shared_tty:
            self.err.write("\n")
            self.mid_line = False
        self.err.write(f"{_DIM}{text}{_UNDIM}" if self.dim else text)
        self.err.flush()
        self.mid_reasoning = not text.endswith("\n")

    def end_reasoning(self) -> None:
        if self.mid_reasoning:
            self.err.write("\n")
            self.err.flush()
            self.mid_reasoning = False

    def token(self, text: str) -> None:
        if not text:
            return
        self.end_reasoning()
        self.out.write(text)
        self.out.flush()
        self.mid_line = not text.endswith("\n")

    def end_reply(self) -> None:
        self.end_reasoning()
        if self.mid_line:
            self.out.write("\n")
            self.out.flush()
            self.mid_line = False

    def note(self, text: str) -> None:
        self.end_reasoning()
        if self.mid_line and self.shared_tty:
            self.err.write("\n")
        self.err.write(text + "\n")
        self.err.flush()


class _MarkdownTerminal(_Terminal):
    """Shows the reply as Markdown rendered by rich, redrawn in place while tokens arrive.

    Each stretch of text between notes (tool calls) is one live display; a note ends it, so the
    note prints below the rendered text instead of inside a redraw.
    """

    def __init__(self, out: TextIO, err: TextIO) -> None:
        super().__init__(out, err)
        from rich.console import Console

        self.console = Console(file=out)
        self.text = ""
        self.live: Any = None

    def _markdown(self) -> Any:
        from rich.markdown import Markdown

        return Markdown(self.text)

    def reasoning(self, text: str) -> None:
        if text and self.live is not None:
            self.end_reply()  # reasoning after some reply text: below the rendered part
        super().reasoning(text)

    def token(self, text: str) -> None:
        if not text:
            return
        self.end_reasoning()
        self.text += text
        if self.live is None:
            from rich.live import Live

            # Parsing happens at each refresh (get_renderable), not at each token.
            self.live = Live(
                console=self.console,
                get_renderable=self._markdown,
                refresh_per_second=10,
                vertical_overflow="visible",
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self.live.start()

    def end_reply(self) -> None:
        self.end_reasoning()
        if self.live is not None:
            self.live.refresh()
            self.live.stop()
            self.live = None
        self.text = ""

    def note(self, text: str) -> None:
        self.end_reply()
        self.err.write(text + "\n")
        self.err.flush()


def _terminal(out: TextIO, err: TextIO, *, plain: bool) -> _Terminal:
    """Markdown for a person at a terminal; the exact reply text for pipes, files and --plain."""
    if plain or not _isatty(out):
        return _Terminal(out, err)
    try:
        return _MarkdownTerminal(out, err)
    except ImportError:  # rich is optional: `pip install 'sse-chat-agent[cli]'`
        return _Terminal(out, err)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _one_line(text: str, limit: int = _TOOL_OUTPUT_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _server_message(response: httpx.Response) -> str:
    """The `{"error"}` text of a refused request, or the start of whatever else came back."""
    try:
        response.read()
        body = response.json()
    except (ValueError, httpx.HTTPError):
        return _one_line(response.text) if response.text else response.reason_phrase
    message = body.get("error") if isinstance(body, dict) else None
    if isinstance(message, str):
        return message
    return _one_line(json.dumps(body))


def run_turn(
    client: httpx.Client,
    base_url: str,
    prompt: str,
    *,
    session: str | None,
    role: str | None,
    raw_json: bool,
    term: _Terminal,
    show_reasoning: bool = True,
    resume: bool = True,
) -> TurnResult:
    """POST one prompt to `/chat` and render its event stream; never raises for server trouble.

    A stream that breaks off is resumed where it stopped (`GET /sessions/{id}/stream?after=`),
    unless `resume` is False: the turn runs on on the server whoever listens.
    """
    body: dict[str, Any] = {"prompt": prompt}
    if session:
        body["session"] = session
    if role:
        body["role"] = role
    url = base_url.rstrip("/") + "/chat"
    reading = _Reading(TurnResult(EXIT_TURN_FAILED, session), term, raw_json, show_reasoning)
    result = reading.result
    try:
        with connect_sse(client, "POST", url, json=body) as source:
            response = source.response
            result.status_code = response.status_code
            if response.status_code != 200:
                message = _server_message(response)
                term.note(f"error: HTTP {response.status_code}: {message}")
                result.exit_code = EXIT_REFUSED
                return result
            if reading.follow(source):
                return result
        broke_off = "the stream ended before the reply finished"
    except SSEError as exc:
        term.note(f"error: the server did not answer with an event stream ({exc})")
        result.exit_code = EXIT_REFUSED
        return result
    except httpx.TransportError as exc:
        if result.status_code is None:
            term.note(f"error: cannot reach {base_url}: {exc or type(exc).__name__}")
            result.exit_code = EXIT_REFUSED
            return result
        broke_off = f"the connection broke off: {exc or type(exc).__name__}"
    if resume and result.session and reading.last_id and _resume(client, base_url, reading):
        return result
    term.end_reply()
    term.note(f"error: {broke_off}")
    result.exit_code = EXIT_TURN_FAILED
    return result


@dataclass(slots=True)
class _Reading:
    """One turn's events as they are read, across reconnects: where it got to, and how."""

    result: TurnResult
    term: _Terminal
    raw_json: bool
    show_reasoning: bool
    last_id: str | None = None

    def follow(self, source: Any) -> bool:
        """Handle every event of `source`; True once the turn's last event was seen."""
        for sse in source.iter_sse():
            if not sse.data:
                continue
            if sse.id:
                self.last_id = sse.id
            if self.raw_json:
                self.term.out.write(sse.data + "\n")
                self.term.out.flush()
            try:
                event = json.loads(sse.data)
            except ValueError:
                continue  # not ours to understand: clients ignore what they do not know
            if not isinstance(event, dict):
                continue
            show = not self.raw_json
            if _handle(
                event, self.result, self.term, show=show, show_reasoning=self.show_reasoning
            ):
                return True
        return False


class _StreamBrokeOff(Exception):
    pass


def _resume(client: httpx.Client, base_url: str, reading: _Reading) -> bool:
    """Read the rest of the turn after the last event seen, with exponential backoff and
    jitter between tries (tenacity); True when the turn's last event arrived."""
    try:
        import tenacity
    except ImportError:  # the cli extra brings it: `pip install 'sse-chat-agent[cli]'`
        return False
    reading.term.note("(connection lost; resuming…)")
    session = reading.result.session

    @tenacity.retry(
        retry=tenacity.retry_if_exception_type((httpx.TransportError, _StreamBrokeOff)),
        wait=tenacity.wait_random_exponential(multiplier=0.5, max=8),
        stop=tenacity.stop_after_attempt(6),
        reraise=True,
    )
    def once() -> bool:
        url = f"{base_url.rstrip('/')}/sessions/{session}/stream"
        with connect_sse(client, "GET", url, params={"after": reading.last_id}) as source:
            status = source.response.status_code
            if status in (204, 404):
                return False  # the turn ended meanwhile with nothing left, or is gone
            if status != 200:
                raise _StreamBrokeOff(f"HTTP {status}")
            if reading.follow(source):
                return True
        raise _StreamBrokeOff("the stream ended before the reply finished")

    try:
        return once()
    except (httpx.TransportError, _StreamBrokeOff, SSEError):
        return False


def _handle(
    event: dict[str, Any],
    result: TurnResult,
    term: _Terminal,
    *,
    show: bool,
    show_reasoning: bool = True,
) -> bool:
    """Apply one protocol event; True when it was the turn's last (done or error)."""
    if event.get("lifecycle") == "started":
        session = event.get("session")
        if isinstance(session, str) and session:
            if show and session != result.session:
                model = event.get("model")
                term.note(f"session: {session}" + (f"  (model: {model})" if model else ""))
            result.session = session
    elif isinstance(event.get("reasoning"), str):
        if show and show_reasoning:
            term.reasoning(event["reasoning"])
    elif isinstance(event.get("token"), str):
        if show:
            term.token(event["token"])
    elif isinstance(event.get("tool_call"), dict):
        if show:
            term.note(f"⚙ {event['tool_call'].get('name', 'tool')} …")
    elif isinstance(event.get("tool_result"), dict):
        if show:
            tool = event["tool_result"]
            arrow = "→" if tool.get("ok", True) else "✗"
            output = _one_line(str(tool.get("output", "")))
            term.note(f"⚙ {tool.get('name', 'tool')} {arrow} {output}")
    elif isinstance(event.get("error"), str):
        term.end_reply()
        term.note(f"error: {event['error']}")
        result.exit_code = EXIT_TURN_FAILED
        return True
    elif event.get("lifecycle") == "done":
        term.end_reply()
        result.exit_code = EXIT_OK
        return True
    return False


def _client(key: str | None) -> httpx.Client:
    headers = {"Accept": "text/event-stream"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.Client(timeout=TIMEOUT, headers=headers)


def _stop(args: argparse.Namespace, term: _Terminal) -> int:
    """POST /sessions/{id}/stop: 202 a reply was running and stops, 204 none was."""
    url = f"{args.url.rstrip('/')}/sessions/{args.stop_session}/stop"
    try:
        with _client(args.key) as client:
            response = client.post(url)
    except httpx.TransportError as exc:
        term.note(f"error: cannot reach {args.url}: {exc or type(exc).__name__}")
        return EXIT_REFUSED
    if response.status_code == 202:
        term.note("stopped: the reply so far is kept")
        return EXIT_OK
    if response.status_code == 204:
        term.note("no reply was running in that session")
        return EXIT_OK
    term.note(f"error: HTTP {response.status_code}: {_server_message(response)}")
    return EXIT_REFUSED


def _ask(args: argparse.Namespace, term: _Terminal) -> int:
    with _client(args.key) as client:
        result = run_turn(
            client,
            args.url,
            args.prompt,
            session=args.session,
            role=args.role,
            raw_json=args.json,
            term=term,
            show_reasoning=not args.hide_reasoning,
            resume=not args.no_resume,
        )
    return result.exit_code


def _chat(args: argparse.Namespace, term: _Terminal, stdin: TextIO) -> int:
    """Read prompts line by line until EOF or /quit, keeping the session; /new starts over."""
    interactive = _isatty(stdin) and _isatty(term.err)
    if interactive:
        term.note("Type a message and press Enter. /new starts a new chat, Ctrl-D quits.")
    session: str | None = args.session
    with _client(args.key) as client:
        while True:
            if interactive:
                term.err.write("› ")
                term.err.flush()
            try:
                line = stdin.readline()
            except KeyboardInterrupt:
                term.note("")
                return EXIT_INTERRUPTED
            if not line:
                return EXIT_OK
            prompt = line.strip()
            if not prompt:
                continue
            if prompt in ("/quit", "/exit"):
                return EXIT_OK
            if prompt == "/new":
                session = None
                term.note("(new chat)")
                continue
            try:
                result = run_turn(
                    client,
                    args.url,
                    prompt,
                    session=session,
                    role=args.role,
                    raw_json=args.json,
                    term=term,
                    show_reasoning=not args.hide_reasoning,
                    resume=not args.no_resume,
                )
            except KeyboardInterrupt:
                term.end_reply()
                term.note("(stopped)")
                continue
            if result.status_code == 404 and session:
                term.note("(the session expired; the next message starts a new chat)")
                session = None
            elif result.session:
                session = result.session


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get(URL_ENV) or DEFAULT_URL,
        help=f"server base URL (default: ${URL_ENV} or {DEFAULT_URL})",
    )
    common.add_argument("--session", help="continue this session id")
    common.add_argument("--role", help="a named agent role the server knows")
    common.add_argument("--json", action="store_true", help="print each raw event as a JSON line")
    common.add_argument(
        "--no-resume",
        action="store_true",
        help="do not resume a stream that breaks off (by default the rest is read back)",
    )
    common.add_argument(
        "--hide-reasoning",
        action="store_true",
        help="do not print the model's reasoning (shown dimmed on stderr by default)",
    )
    common.add_argument(
        "--plain",
        action="store_true",
        help="print the reply's raw text even on a terminal (no Markdown rendering)",
    )
    common.add_argument(
        "--key",
        default=os.environ.get(KEY_ENV) or None,
        help=f"access key, if the server requires one (default: ${KEY_ENV})",
    )
    parser = argparse.ArgumentParser(
        prog="sse-chat",
        description="Stream replies from an sse-chat-agent server in the terminal.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{ask,chat,stop}")
    ask = commands.add_parser("ask", parents=[common], help="send one prompt, stream the reply")
    ask.add_argument("prompt", help="the message to send")
    commands.add_parser("chat", parents=[common], help="interactive chat that keeps the session")
    stop = commands.add_parser(
        "stop", parents=[common], help="stop the reply running in a session, wherever it runs"
    )
    stop.add_argument("stop_session", metavar="SESSION", help="the session id")
    return parser


def run(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """The whole CLI with injectable streams; returns the exit code."""
    args = _parser().parse_args(argv)
    term = _terminal(stdout or sys.stdout, stderr or sys.stderr, plain=args.plain or args.json)
    try:
        if args.command == "ask":
            return _ask(args, term)
        if args.command == "stop":
            return _stop(args, term)
        return _chat(args, term, stdin or sys.stdin)
    except KeyboardInterrupt:
        term.end_reply()
        return EXIT_INTERRUPTED


def main() -> None:
    """Console-script entry point (`sse-chat`)."""
    try:
        code = run()
    except BrokenPipeError:
        # The reader went away (`sse-chat ask ... | head`): exit quietly, as Unix tools do.
        # Python's recipe: point stdout at devnull so the interpreter's final flush cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_TURN_FAILED
    sys.exit(code)


if __name__ == "__main__":
    main()
