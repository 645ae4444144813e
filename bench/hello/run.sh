#!/bin/bash
# As src/run.sh: the Web Adapter's port, the task root first on the path, uvicorn with the same
# HTTP and loop implementations the project's handlers.serve picks on Lambda (h11, asyncio).
set -euo pipefail
TASK_ROOT="${LAMBDA_TASK_ROOT:-$(cd "$(dirname "$0")" && pwd)}"
export PYTHONPATH="$TASK_ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec python -m uvicorn hello:app --host 127.0.0.1 --port "${AWS_LWA_PORT:-${PORT:-8080}}" \
    --http h11 --loop asyncio --no-access-log
