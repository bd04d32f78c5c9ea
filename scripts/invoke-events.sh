#!/usr/bin/env bash
# Sends every sample event in events/ with `cargo lambda invoke`, as a developer would, to the local
# serverless loop (scripts/serverless-local.sh: one store, moto's SQS, the SQS -> step driver) and
# checks each answer. The job events/submit-generate.json creates is stepped by the step driver through a
# fake OpenAI-compatible provider on loopback; the job events (poll-job, purge-job, step-sqs) are then
# sent naming that job, so poll sees it completed and purge removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS="${STEPPER_TOOLS_DIR:-$ROOT/.tools}"
export PATH="$TOOLS/venv/bin:$PATH"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port); PROVIDER_PORT=$(free_port)
RUN=$(mktemp -d "${TMPDIR:-/tmp}/stepper-events.XXXXXX")
LOOP_PID=""; PROVIDER_PID=""
cleanup() {
  [ -n "$LOOP_PID" ] && kill -TERM -- "-$LOOP_PID" 2>/dev/null || true
  [ -n "$PROVIDER_PID" ] && kill "$PROVIDER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$RUN"
}
trap cleanup EXIT

# A fake OpenAI-compatible provider: every chat completion answers the colours the sample job asks for.
python3 - "$PROVIDER_PORT" >"$RUN/provider.log" 2>&1 <<'PY' &
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"id": "c", "object": "chat.completion", "model": "m", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": "{\"colours\": [\"red\", \"green\", \"blue\"]}"},
            "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
PROVIDER_PID=$!
printf '[[providers]]\nname = "fake"\nkind = "openai"\nbase_url = "http://127.0.0.1:%s/v1"\nmodel = "m"\ntimeout_ms = 2000\n' \
  "$PROVIDER_PORT" >"$RUN/providers.toml"
{ cat scripts/serverless-local.env; echo "STEPPER_CONFIG=$RUN/providers.toml"; } >"$RUN/functions.env"

WATCH_PORT="$PORT" SERVERLESS_ENV_FILE="$RUN/functions.env" STEP_VISIBILITY=2 WATCH_ARGS=--ignore-changes \
  setsid bash scripts/serverless-local.sh >"$RUN/loop.log" 2>&1 &
LOOP_PID=$!

invoke() { # function event: events/<event>.json, or the copy naming the submitted job
  local file="events/$2.json"; [ -f "$RUN/$2.json" ] && file="$RUN/$2.json"
  cargo lambda invoke "$1" --invoke-address 127.0.0.1 --invoke-port "$PORT" --data-file "$file" 2>&1 | tail -1
}
failures=0
check() { # function event expected-fragment
  local out
  out=$(invoke "$1" "$2")
  if [[ "$out" == *"$3"* ]]; then echo "invoke $1 events/$2.json: ok ($3)"; else echo "invoke $1 events/$2.json: FAILED: $out"; failures=$((failures + 1)); fi
}
# Up when poll answers (each function compiles on its first call).
for _ in $(seq 300); do [[ "$(invoke poll health)" == *'"statusCode":200'* ]] && break; sleep 2; done

# The sample job does not exist: its redelivery is a clear 404.
check submit redeliver '"statusCode":404'
SUBMITTED=$(invoke submit submit-generate)
JOB=$(python3 -c 'import json, sys; print(json.loads(json.loads(sys.argv[1])["body"])["jobId"])' "$SUBMITTED" 2>/dev/null || true)
if [ -z "$JOB" ]; then echo "invoke submit events/submit-generate.json: FAILED: $SUBMITTED"; tail -40 "$RUN/loop.log"; exit 1; fi
echo "invoke submit events/submit-generate.json: ok (job $JOB queued)"
SAMPLE=$(python3 -c 'import json; print(json.load(open("events/poll-job.json"))["rawPath"].rsplit("/", 1)[1])')
for event in poll-job purge-job step-sqs; do sed "s/$SAMPLE/$JOB/g" "events/$event.json" >"$RUN/$event.json"; done
# The step driver takes the job's first step from SQS and runs it.
for _ in $(seq 120); do [[ "$(invoke poll poll-job)" == *'completed'* ]] && break; sleep 1; done
check poll poll-job '\"status\":\"completed\"'
check step step-sqs '{"batchItemFailures":[]}'
check poll health '"statusCode":200'
check poll ready '\"status\":\"ready\"'
check poll providers '"statusCode":200'
check poll openapi '"statusCode":200'
check poll budget '\"storeCommands\"'
check poll jobs-overview '\"oldest\"'
check poll dashboard '"statusCode":200'
check submit submit-report '"statusCode":202'
check poll poll-report '"statusCode":404'
check step step-redrive '"redriven":'
check purge purge-report '"statusCode":200'
check purge purge-job '"statusCode":200'
check poll poll-job '"statusCode":404'
[ "$failures" -eq 0 ] || { echo "serverless-local log:"; tail -40 "$RUN/loop.log"; exit 1; }
