"""The OpenAI adapter as the app runs it: owning its HTTP client."""

from __future__ import annotations

import httpx

from core.model.openai import OpenAIChatModel


class Model(OpenAIChatModel):
    """The OpenAI adapter owning its HTTP client (closed with the app)."""

    def __init__(self, client: httpx.AsyncClient, **kwargs: object) -> None:
        super().__init__(client=client, **kwargs)  # type: ignore[arg-type]
        self._owned_client = client

    async def aclose(self) -> None:
        await self._owned_client.aclose()
