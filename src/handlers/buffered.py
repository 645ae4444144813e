"""The buffered Lambda entry point (`Streaming=false`): Mangum over the same app.

`sam local invoke`, API Gateway and ALB call a Python handler and take the whole response at
once, so the SSE body arrives in one piece. Built at import, which Lambda runs at init: warm
invocations reuse it. Lifespan off: Mangum would run the app's shutdown after every
invocation, closing the HTTP client that the next one reuses.
"""

from __future__ import annotations

from mangum import Mangum

from handlers.app import create_app

handler = Mangum(create_app(), lifespan="off")
