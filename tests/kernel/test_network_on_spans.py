"""L4 facts on L7 exchanges: real packet loss on loopback (iptables random drop for one port)
shows as retransmits on the HTTP exchanges of that connection, within what the kernel counted."""

from __future__ import annotations

import subprocess
import sys

from otel_ebpf.records import Role
from otel_ebpf.testing.netns import drop_random

from .support import server_side

CLIENT = """
import http.client, socket, struct, sys
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    conn.request("GET", "/big?n=2000000")
    body = conn.getresponse().read()
    assert len(body) == 2000000
info = conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
print(struct.unpack_from("I", info, 100)[0])  # tcpi_total_retrans of the client side
"""


def test_retransmits_under_real_loss_appear_on_the_exchanges_of_that_connection(threading_server, capture):
    cap = capture(threading_server.port)
    with drop_random(threading_server.port, 0.05):
        out = subprocess.run([sys.executable, "-c", CLIENT, str(threading_server.port), "5"], capture_output=True,
                             text=True, check=True, timeout=120)
    served = cap.sink.wait_for(5, where=server_side(threading_server), timeout=30)
    clients = cap.sink.wait_for(5, where=lambda e: e.connection.role == Role.CLIENT
                                and e.connection.remote_port == threading_server.port, timeout=30)
    assert all(e.tcp is not None and e.tcp.srtt_us > 0 for e in served + clients)
    server_retrans = sum(e.tcp.retransmits for e in served)
    client_retrans = sum(e.tcp.retransmits for e in clients)
    # 10 MB from the server through a 5% drop: the server retransmits, inside its large writes.
    assert server_retrans > 0
    # The client's own count (requests and ACK-only traffic rarely retransmit) bounds what its
    # exchanges report: never more than the kernel counted for the connection.
    assert client_retrans <= int(out.stdout.strip())
