#!/usr/bin/env python3
"""A minimal OTLP/HTTP receiver for the traces overhead benchmark: accepts POST /v1/traces
(protobuf) on 127.0.0.1:4318, counts the bytes and answers with an empty
ExportTraceServiceResponse. Run it, then the edge benchmark with
GATEHOUSE_TRACES__ENABLED=true GATEHOUSE_TRACES__PROTOCOL=http
GATEHOUSE_TRACES__ENDPOINT=http://127.0.0.1:4318/v1/traces."""
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

received = {"exports": 0, "bytes": 0}


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        received["exports"] += 1
        received["bytes"] += length
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 4318), Sink)
    try:
        server.serve_forever()
    finally:
        print(f"otlp-sink: {received['exports']} exports, {received['bytes']} bytes")
