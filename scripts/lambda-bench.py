#!/usr/bin/env python3
"""Size, cold start and warm latency of the four Lambda bootstraps, against an emulated Runtime API.

For each function: the bootstrap's size (unzipped and zipped, both architectures when built), then
on this machine (x86_64 bootstraps): cold start = process start -> first invocation answered, the
median of COLD_RUNS starts; warm p50/p99 = event handed out on /next -> answer received, over
WARM_INVOCATIONS invocations of one process. The invocations are answered by the function alone
(OpenAPI document, an unauthenticated call refused, an empty SQS batch): no store or queue is
contacted, so the figures are the runtime's and the function's own.

Each bootstrap's ELF type is shown too: PIE (DYN, the whole executable moved by ASLR) or EXEC
(linked at a fixed address).

ARM64_UNDER_QEMU=1 also starts the arm64 bootstraps, under qemu-aarch64 (user mode, with the
cross glibc in QEMU_LD_PREFIX, default /usr/aarch64-linux-gnu; Debian: qemu-user and
libc6-arm64-cross): the figures are the emulator's, good for comparing two arm64 builds with each
other on this machine, not for what Lambda's Graviton does.

Usage: lambda-bench.py [LAMBDA_DIR]   (default target/lambda; scripts/lambda-build.sh fills it)
"""
import io
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COLD_RUNS = int(os.environ.get("COLD_RUNS", "20"))
ARM64_UNDER_QEMU = os.environ.get("ARM64_UNDER_QEMU") == "1"
QEMU_LD_PREFIX = os.environ.get("QEMU_LD_PREFIX", "/usr/aarch64-linux-gnu")
WARM_INVOCATIONS = int(os.environ.get("WARM_INVOCATIONS", "500"))


def http_event(method, path, headers=None):
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": "api.local", "content-type": "application/json", **(headers or {})},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api",
            "domainName": "api.local",
            "domainPrefix": "api",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "bench"},
            "requestId": "bench",
            "routeKey": "$default",
            "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000",
            "timeEpoch": 1767225600000,
        },
        "body": "{}" if method == "POST" else None,
        "isBase64Encoded": False,
    }


# What each function answers without a store: (event, a fragment the answer must contain).
EVENTS = {
    "submit": (http_event("POST", "/v1/generate"), '"statusCode":401'),
    "poll": (http_event("GET", "/openapi.json"), '"statusCode":200'),
    "purge": (http_event("DELETE", "/v1/jobs/0123456789abcdef0123456789abcdef"), '"statusCode":401'),
    "step": ({"Records": []}, '"batchItemFailures":[]'),
}


class RuntimeApi:
    """The Lambda Runtime API, for one function process at a time."""

    def __init__(self):
        self.events = queue.Queue()
        self.answers = queue.Queue()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else 40 ms of delayed ACK per invocation

            def log_message(self, *args):
                pass

            def do_GET(self):
                if not self.path.endswith("/runtime/invocation/next"):
                    self.send_error(404)
                    return
                body = api.events.get()
                if body is None:  # the process is gone: nothing more to hand out
                    return
                request_id = str(uuid.uuid4())
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:bench")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()
                api.sent = time.perf_counter()

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.headers.get("Transfer-Encoding") == "chunked":
                    body = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        body += self.rfile.read(size)
                        self.rfile.readline()
                now = time.perf_counter()
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                api.answers.put((now, self.path, body.decode(errors="replace")))

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a killed function's connection resets: expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def environment(api, function):
    return {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api.port}",
        "AWS_LAMBDA_FUNCTION_NAME": function,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_LEVEL": "WARN",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        # Never contacted by these invocations; present because a Lambda function refuses to start without them.
        "UPSTASH_REDIS_REST_URL": "http://127.0.0.1:9",
        "UPSTASH_REDIS_REST_TOKEN": "bench",
        "STEP_QUEUE_URL": "http://127.0.0.1:9/123456789012/steps",
        "STEPPER_API_KEYS": "bench=bench-key",
    }


def answer(api, expected):
    at, path, body = api.answers.get(timeout=30)
    if not path.endswith("/response") or expected not in body.replace(" ", ""):
        raise SystemExit(f"unexpected answer on {path}: {body[:300]}")
    return at


def stop(api, process):
    process.kill()
    process.wait()
    api.events.put(None)
    api.server.shutdown()


def bench(bootstrap, function, under_qemu=False):
    event, expected = EVENTS[function]
    command = ["qemu-aarch64", "-L", QEMU_LD_PREFIX, bootstrap] if under_qemu else [bootstrap]
    colds = []
    for _ in range(COLD_RUNS):
        api = RuntimeApi()  # one per process: a killed process's pending /next must not take the next event
        api.events.put(event)
        start = time.perf_counter()
        process = subprocess.Popen(command, env=environment(api, function), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            colds.append((answer(api, expected) - start) * 1000)
        finally:
            stop(api, process)
    api = RuntimeApi()
    process = subprocess.Popen(command, env=environment(api, function), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    warms = []
    try:
        for i in range(WARM_INVOCATIONS + 20):
            api.events.put(event)
            at = answer(api, expected)
            if i >= 20:  # the first ones warm the connection and the allocator
                warms.append((at - api.sent) * 1000)
    finally:
        stop(api, process)
    warms.sort()
    return statistics.median(colds), warms[len(warms) // 2], warms[min(len(warms) - 1, int(len(warms) * 0.99))]


def sizes(path):
    raw = os.path.getsize(path)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(path, "bootstrap")
    return raw / 1e6, len(buffer.getvalue()) / 1e6


def elf_type(path):
    with open(path, "rb") as f:
        head = f.read(18)
    kind = int.from_bytes(head[16:18], "little") if head[:4] == b"\x7fELF" else None
    return {2: "EXEC", 3: "PIE"}.get(kind, "?")


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else "target/lambda"
    print(f"bootstraps in {base}/<arch>/<function>/bootstrap; cold start: median of {COLD_RUNS} starts; "
          f"warm: {WARM_INVOCATIONS} invocations (x86_64, this machine)")
    header = f"{'function':<8} {'x86_64 MB':>10} {'zip':>5} {'type':>4} {'arm64 MB':>9} {'zip':>5} {'type':>4} {'cold ms':>8} {'warm p50 ms':>12} {'p99 ms':>7}"
    if ARM64_UNDER_QEMU:
        header += f" {'arm64 qemu cold ms':>18} {'warm p50 ms':>12} {'p99 ms':>7}"
    print(header, flush=True)
    for function in ["submit", "poll", "purge", "step"]:
        row = [f"{function:<8}"]
        for arch in ["x86_64", "arm64"]:
            path = os.path.join(base, arch, function, "bootstrap")
            if os.path.exists(path):
                raw, zipped = sizes(path)
                row.append(f"{raw:>{10 if arch == 'x86_64' else 9}.2f} {zipped:>5.1f} {elf_type(path):>4}")
            else:
                row.append(f"{'-':>{10 if arch == 'x86_64' else 9}} {'-':>5} {'-':>4}")
        native = os.path.join(base, "x86_64", function, "bootstrap")
        if os.path.exists(native) and os.uname().machine == "x86_64":
            cold, p50, p99 = bench(native, function)
            row.append(f"{cold:>8.1f} {p50:>12.2f} {p99:>7.2f}")
        else:
            row.append(f"{'-':>8} {'-':>12} {'-':>7}")
        arm = os.path.join(base, "arm64", function, "bootstrap")
        if ARM64_UNDER_QEMU and os.path.exists(arm):
            cold, p50, p99 = bench(arm, function, under_qemu=True)
            row.append(f"{cold:>18.1f} {p50:>12.2f} {p99:>7.2f}")
        print(" ".join(row), flush=True)


if __name__ == "__main__":
    main()
