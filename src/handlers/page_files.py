"""The page's static files, mounted at the root after every route."""

from __future__ import annotations

import anyio
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match, Mount
from starlette.types import Scope


class PageFiles(StaticFiles):
    """StaticFiles, except that a path nothing serves is 404 for every method.

    Starlette's router hands a request no route fully matches to this mount, which answers 405
    to any method but GET/HEAD before looking the path up: a `POST /anything` would be told
    something lives there. 405 stays for files and for routes asked with another method.
    """

    async def get_response(self, path: str, scope: Scope) -> Response:
        if scope["method"] not in ("GET", "HEAD"):
            try:
                _, found = await anyio.to_thread.run_sync(self.lookup_path, path)
            except (OSError, ValueError):
                found = None
            if found is None and not _a_route_takes_other_methods(scope):
                raise HTTPException(status_code=404)
        return await super().get_response(path, scope)


def _a_route_takes_other_methods(scope: Scope) -> bool:
    router = scope.get("router")
    routes = getattr(router, "routes", ())
    return any(
        route.matches(scope)[0] is Match.PARTIAL for route in routes if not isinstance(route, Mount)
    )
