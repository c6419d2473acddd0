"""HTTP/1.x exchanges captured from the kernel with real servers and clients on loopback."""

from __future__ import annotations

import subprocess

from .support import APPS, PY, client_side, run_client, server_side

from otel_ebpf.records import Role


def test_one_hundred_keep_alive_requests_on_one_connection_become_one_hundred_exchanges(threading_server, capture):
    cap = capture(threading_server.port)
    run_client("keepalive", str(threading_server.port), "100", "/ok")
    served = cap.sink.wait_for(100, where=server_side(threading_server))
    sent = cap.sink.wait_for(100, where=client_side(threading_server))
    assert len(served) == 100 and len(sent) == 100
    assert {(e.request.method, e.request.target, e.response.status) for e in served} == {("GET", "/ok", 200)}
    assert len({e.connection.sock_id for e in served}) == 1
    assert all(e.start_ns <= e.end_ns for e in served)
    assert all(e.connection.pid == threading_server.pid for e in served)


def test_pipelined_requests_are_paired_in_order(threading_server, capture):
    cap = capture(threading_server.port)
    run_client("pipelined", str(threading_server.port), "5")
    served = cap.sink.wait_for(5, where=server_side(threading_server))
    assert [e.request.target for e in served] == [f"/ok?i={i}" for i in range(5)]
    assert all(e.response.status == 200 for e in served)


def test_status_codes_404_and_500_are_reported(threading_server, capture):
    cap = capture(threading_server.port)
    for path in ("/notfound", "/error"):
        subprocess.run(["curl", "-s", "-o", "/dev/null", threading_server.url(path)], check=True, timeout=30)
    served = cap.sink.wait_for(2, where=server_side(threading_server))
    assert {e.request.target: e.response.status for e in served} == {"/notfound": 404, "/error": 500}
    curl = cap.sink.wait_for(2, where=client_side(threading_server))
    assert all(e.request.header("user-agent", ).startswith("curl/") for e in curl)


def test_chunked_response_with_trailer_is_one_exchange(threading_server, capture):
    cap = capture(threading_server.port)
    run_client("keepalive", str(threading_server.port), "3", "/chunked")
    served = cap.sink.wait_for(3, where=server_side(threading_server))
    assert all(e.response.status == 200 for e in served)
    assert served[0].response.body_size == len(b"first-second-third")
    assert ("x-checksum", "abc") in served[0].response.trailers


def test_aiohttp_streamed_chunked_responses(aiohttp_server, capture):
    cap = capture(aiohttp_server.port)
    run_client("keepalive", str(aiohttp_server.port), "10", "/chunked")
    subprocess.run(["curl", "-s", "-o", "/dev/null", aiohttp_server.url("/error")], check=True, timeout=30)
    served = cap.sink.wait_for(11, where=server_side(aiohttp_server))
    chunked = [e for e in served if e.request.target == "/chunked"]
    assert len(chunked) == 10
    assert all(e.response.status == 200 and e.response.body_size == len("part-0;") * 5 for e in chunked)
    assert [e.response.status for e in served if e.request.target == "/error"] == [500]


def test_headers_written_in_many_syscalls_are_reassembled(threading_server, capture):
    cap = capture(threading_server.port)
    run_client("split_headers", str(threading_server.port))
    served = cap.sink.wait_for(1, where=server_side(threading_server))
    assert served[0].request.target == "/ok?split=1"
    assert served[0].request.header("x-filler-24") == "v" * 100


def test_writev_and_sendmsg_requests_are_captured(threading_server, capture):
    cap = capture(threading_server.port)
    run_client("writev", str(threading_server.port))
    run_client("sendmsg", str(threading_server.port))
    sent = cap.sink.wait_for(2, where=client_side(threading_server))
    assert sorted(e.request.target for e in sent) == ["/ok?via=sendmsg", "/ok?via=writev"]


def test_concurrent_connections_each_keep_their_exchanges(threading_server, capture):
    cap = capture(threading_server.port)
    run_client("concurrent", str(threading_server.port), "8", "25")
    served = cap.sink.wait_for(200, where=server_side(threading_server))
    targets = sorted(e.request.target for e in served)
    assert targets == sorted(f"/ok?c={i}&r={j}" for i in range(8) for j in range(25))
    assert len({e.connection.sock_id for e in served}) == 8


def test_connection_opened_before_the_agent_started_is_parsed_from_its_next_request(threading_server, capture):
    client = subprocess.Popen([PY, str(APPS / "clients.py"), "preopened", str(threading_server.port)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "connected"
        cap = capture(threading_server.port)
        client.stdin.write("go\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "done"
        served = cap.sink.wait_for(2, where=server_side(threading_server))
        assert [e.request.target for e in served] == ["/ok?phase=after&i=0", "/ok?phase=after&i=1"]
        assert all(e.connection.role == Role.SERVER for e in served)
        sent = cap.sink.wait_for(2, where=client_side(threading_server))
        assert all(e.connection.role == Role.CLIENT for e in sent)
    finally:
        client.kill()
        client.wait()


def test_nginx_sendfile_bodies_and_curl(nginx_server, capture):
    cap = capture(nginx_server.port)
    for path in ("/index.html", "/big.bin", "/status500", "/missing"):
        subprocess.run(["curl", "-s", "-o", "/dev/null", nginx_server.url(path)], check=True, timeout=30)
    served = cap.sink.wait_for(4, where=server_side(nginx_server))
    assert {e.request.target: e.response.status for e in served} == {
        "/index.html": 200, "/big.bin": 200, "/status500": 500, "/missing": 404}
    big = next(e for e in served if e.request.target == "/big.bin")
    assert big.response.body_size == 200_000


def test_urllib_client_and_post_body_size(threading_server, capture):
    cap = capture(threading_server.port)
    subprocess.run(["curl", "-s", "-o", "/dev/null", "-X", "POST", "--data-binary", "x" * 3000,
                    threading_server.url("/echo")], check=True, timeout=30)
    run_client("urllib", threading_server.url("/users/42?token=secret"))
    served = cap.sink.wait_for(2, where=server_side(threading_server))
    post = next(e for e in served if e.request.method == "POST")
    assert post.request.body_size == 3000 and post.response.status == 201
    get = next(e for e in served if e.request.method == "GET")
    assert get.request.target.startswith("/users/42")
