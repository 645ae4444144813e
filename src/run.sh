#!/bin/bash
# Lambda handler in streaming mode: the Lambda Web Adapter's wrapper (/opt/bootstrap) runs this,
# waits for GET /healthz on the port, then relays each Function URL request to it as a stream.
# sam build installs the dependencies next to this file (LAMBDA_TASK_ROOT, /var/task on Lambda);
# putting that first on PYTHONPATH makes them win over the runtime's bundled boto3.
set -euo pipefail
TASK_ROOT="${LAMBDA_TASK_ROOT:-$(cd "$(dirname "$0")" && pwd)}"
export PATH="$PATH:$TASK_ROOT/bin"
export PYTHONPATH="$TASK_ROOT${PYTHONPATH:+:$PYTHONPATH}"
# The adapter's port (AWS_LWA_PORT, else PORT, else its default 8080). 127.0.0.1: only the
# adapter, in the same sandbox, talks to the app.
export PORT="${AWS_LWA_PORT:-${PORT:-8080}}"
export HOST=127.0.0.1
# handlers.serve runs uvicorn on HOST:PORT with the options the contract needs (URL size, shutdown).
exec python -m handlers.serve
