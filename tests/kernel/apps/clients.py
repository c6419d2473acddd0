"""Test clients run as separate processes (the agent never traces its own process).

python3 clients.py keepalive PORT N PATH        N requests on one connection (http.client)
python3 clients.py pipelined PORT N             N requests in one write, then read N responses
python3 clients.py split_headers PORT           ~2.7 KiB of headers sent in 500-byte writes
python3 clients.py writev PORT                  request written with os.writev (3 iovecs)
python3 clients.py sendmsg PORT                 request written with socket.sendmsg (3 buffers)
python3 clients.py concurrent PORT CONNS REQS   CONNS threads, REQS keep-alive requests each
python3 clients.py preopened PORT               1 request, then waits for a line on stdin, then 2 more
python3 clients.py urllib URL                   one urllib request
python3 clients.py big_posts PORT N SIZE        N POSTs of SIZE bytes on one connection, then a GET
"""

import http.client
import os
import socket
import sys
import threading


def read_responses(sock, n):
    """Read n Content-Length responses from a raw socket."""
    buf = b""
    done = 0
    while done < n:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return done
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(rest) < length:
            rest += sock.recv(65536)
        buf = rest[length:]
        done += 1
    return done


def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def main():
    mode, port = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else 0
    if mode == "keepalive":
        n, path = int(sys.argv[3]), sys.argv[4]
        conn = http.client.HTTPConnection("127.0.0.1", port)
        for _ in range(n):
            conn.request("GET", path)
            conn.getresponse().read()
        conn.close()
    elif mode == "pipelined":
        n = int(sys.argv[3])
        s = connect(port)
        s.sendall(b"".join(f"GET /ok?i={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(n)))
        assert read_responses(s, n) == n
        s.close()
    elif mode == "split_headers":
        s = connect(port)
        head = b"GET /ok?split=1 HTTP/1.1\r\nHost: x\r\n" + b"".join(
            f"X-Filler-{i}: {'v' * 100}\r\n".encode() for i in range(25)) + b"\r\n"
        for i in range(0, len(head), 500):
            s.send(head[i:i + 500])
        assert read_responses(s, 1) == 1
        s.close()
    elif mode == "writev":
        s = connect(port)
        os.writev(s.fileno(), [b"GET /ok?via=writev HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"])
        assert read_responses(s, 1) == 1
        s.close()
    elif mode == "sendmsg":
        s = connect(port)
        s.sendmsg([b"GET /ok?via=sendmsg HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"])
        assert read_responses(s, 1) == 1
        s.close()
    elif mode == "concurrent":
        conns, reqs = int(sys.argv[3]), int(sys.argv[4])

        def worker(i):
            c = http.client.HTTPConnection("127.0.0.1", port)
            for j in range(reqs):
                c.request("GET", f"/ok?c={i}&r={j}")
                c.getresponse().read()
            c.close()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    elif mode == "preopened":
        s = connect(port)
        s.sendall(b"GET /ok?phase=before HTTP/1.1\r\nHost: x\r\n\r\n")
        read_responses(s, 1)
        print("connected", flush=True)
        sys.stdin.readline()
        for i in range(2):
            s.sendall(f"GET /ok?phase=after&i={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            read_responses(s, 1)
        s.close()
        print("done", flush=True)
    elif mode == "urllib":
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(sys.argv[2], timeout=10).read()
        except urllib.error.HTTPError:
            pass
    elif mode == "big_posts":
        pass  # handled below
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()


def big_posts(port, n, size):
    """n POSTs of `size` bytes each on one keep-alive connection, then one GET."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(n):
        conn.request("POST", f"/echo?i={i}", body=b"p" * size, headers={"Content-Type": "application/octet-stream"})
        conn.getresponse().read()
    conn.request("GET", "/ok?after=posts")
    conn.getresponse().read()
    conn.close()


if __name__ == "__main__" and sys.argv[1] == "big_posts":
    big_posts(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
