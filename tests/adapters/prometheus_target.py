"""A scrape target standing in for a model server outside the gateway (Triton, KServe, Seldon):
prometheus_client counters and a latency histogram per model version, on /metrics. The test drives
it with POST /observe {"version": "2", "latencies_s": [...], "errors": N}: one request per latency,
the first N of them failed. Prints its port on stdout, then serves until killed."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

metrics = CollectorRegistry()
REQUESTS = Counter("model_requests", "inference requests", ["version"], registry=metrics)
ERRORS = Counter("model_errors", "failed inference requests", ["version"], registry=metrics)
LATENCY = Histogram("model_latency_seconds", "inference latency", ["version"], registry=metrics)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = generate_latest(metrics)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        order = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        version = order["version"]
        for latency in order["latencies_s"]:
            REQUESTS.labels(version).inc()
            LATENCY.labels(version).observe(latency)
        ERRORS.labels(version).inc(order.get("errors", 0))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
