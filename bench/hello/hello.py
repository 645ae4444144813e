"""The cold-start yardstick (DESIGN section 7): about the least a FastAPI SSE app can be.

Built by src/Makefile like the project (its own lock, bench/hello/requirements.txt, pinned to
the project's versions) and started like it, by run.sh under the Web Adapter's rules.
"""

from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

app = FastAPI()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/chat")
async def chat(prompt: str = "") -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        yield b'data: {"lifecycle": "started"}\n\n'
        for word in prompt.split():
            yield b'data: {"token": "' + word.encode() + b'"}\n\n'
        yield b'data: {"lifecycle": "done"}\n\n'

    return StreamingResponse(events(), media_type="text/event-stream")
