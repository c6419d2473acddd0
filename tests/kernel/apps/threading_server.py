"""HTTP/1.1 test server on Python's ThreadingHTTPServer: `python3 threading_server.py PORT [HOST]`.

Routes: /ok (200), /notfound (404), /error (500), /chunked (chunked body in 3 chunks + trailer),
/big?n=BYTES (fixed-length body), /echo (POST: echoes the body length). Writes each response with
one send so that keep-alive does not stall on Nagle + delayed ACK.
"""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status, body=b"", headers=()):
        head = f"HTTP/1.1 {status} {self.responses[status][0]}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        self.wfile.write(head.encode() + body)

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path in ("/ok", "/") or url.path.startswith("/users/"):
            self._send(200, b"hello\n", [("Content-Type", "text/plain")])
        elif url.path == "/notfound":
            self._send(404, b"nope\n")
        elif url.path == "/error":
            self._send(500, b"boom\n")
        elif url.path == "/big":
            n = int(parse_qs(url.query).get("n", ["100000"])[0])
            self._send(200, b"x" * n)
        elif url.path == "/chunked":
            body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
            for part in (b"first-", b"second-", b"third"):
                body += f"{len(part):x}\r\n".encode() + part + b"\r\n"
            body += b"0\r\nX-Checksum: abc\r\n\r\n"
            self.wfile.write(body)
        else:
            self._send(404, b"")

    def do_HEAD(self):
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(n)
        self._send(201, str(len(data)).encode())


if __name__ == "__main__":
    server = ThreadingHTTPServer((sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    print("listening", flush=True)
    server.serve_forever()
