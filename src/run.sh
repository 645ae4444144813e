#!/bin/bash
# Lambda handler in streaming mode: the Lambda Web Adapter's wrapper (/opt/bootstrap) runs this,
# waits for GET /healthz on the port, then relays each Function URL request to it as a stream.
# sam build installs the dependencies next to this file (LAMBDA_TASK_ROOT, /var/task on Lambda);
# putting that first on PYTHONPATH makes them win over the runtime's bundled boto3.
set -euo pipefail
TASK_ROOT="${LAMBDA_TASK_ROOT:-$(cd "$(dirname "$0")" && pwd)}"
export PATH="$PATH:$TASK_ROOT/bin"
export PYTHONPATH="$TASK_ROOT${PYTHONPATH:+:$PYTHONPATH}"
# 127.0.0.1: only the adapter, in the same sandbox, talks to uvicorn. The h11 limit lets a long
# GET /chat?prompt=... reach the app, which answers 413 in JSON rather than h11's bare 400.
exec python -m uvicorn handlers.app:app \
  --host 127.0.0.1 \
  --port "${AWS_LWA_PORT:-${PORT:-8080}}" \
  --no-access-log \
  --h11-max-incomplete-event-size 262144
