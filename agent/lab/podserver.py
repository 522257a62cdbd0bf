"""A pod's application: a tiny HTTP/1.1 server answering `version=<v> pod=<name>`.

    python -m agent.lab.podserver --version v1 --pod my-app-v1-0 [--port 8080]

Keep-alive is supported (tests hold one connection open across a weight change).
"""
from __future__ import annotations

import argparse
import http.server
import socketserver


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kernsplit-lab"
    answer = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        body = self.answer
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args) -> None:
        pass  # thousands of requests per test: keep logs quiet


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--version", required=True)
    p.add_argument("--pod", required=True)
    p.add_argument("--port", type=int, default=8080)
    args = p.parse_args()
    handler = type("Handler", (_Handler,), {"answer": f"version={args.version} pod={args.pod}\n".encode()})
    with _Server(("0.0.0.0", args.port), handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
