"""gRPC test server and client on grpcio, with raw-bytes serializers (no protoc needed).

python3 grpc_app.py serve PORT                      demo.Echo on 127.0.0.1:PORT (insecure, h2c)
python3 grpc_app.py session PORT                    one channel kept open; each line "N" on stdin makes N
                                                    unary calls and prints "done N"
python3 grpc_app.py call PORT SHAPE N               N calls of one shape on one channel:
    unary | server_stream | client_stream | bidi | not_found | deadline | big | big_fail
Service demo.Echo: Unary echoes; ServerStream answers 3 messages; ClientStream counts the messages it got;
Bidi echoes each message; Fail aborts with NOT_FOUND; Slow sleeps 2 s (the client's deadline is 0.2 s);
Big answers one 300 KB message (its last DATA frames and the trailers leave in one large write);
BigFail streams one 300 KB message, then aborts with NOT_FOUND.
"""

import sys
import time
from concurrent import futures

import grpc

IDENTITY = {"request_deserializer": bytes, "response_serializer": bytes}


def unary(request, context):
    return b"echo:" + request


def server_stream(request, context):
    for i in range(3):
        yield f"part{i}:".encode() + request


def client_stream(request_iterator, context):
    return str(sum(1 for _ in request_iterator)).encode()


def bidi(request_iterator, context):
    for message in request_iterator:
        yield b"echo:" + message


def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")


BIG = bytes(range(256)) * 1200  # 300 KB


def big(request, context):
    return BIG


def big_fail(request, context):
    yield BIG
    context.abort(grpc.StatusCode.NOT_FOUND, "gone after the first message")


def slow(request, context):
    time.sleep(2)
    return b"late"


def serve(port: int) -> None:
    handler = grpc.method_handlers_generic_handler("demo.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, **IDENTITY),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, **IDENTITY),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, **IDENTITY),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi, **IDENTITY),
        "Fail": grpc.unary_unary_rpc_method_handler(fail, **IDENTITY),
        "Slow": grpc.unary_unary_rpc_method_handler(slow, **IDENTITY),
        "Big": grpc.unary_unary_rpc_method_handler(big, **IDENTITY),
        "BigFail": grpc.unary_stream_rpc_method_handler(big_fail, **IDENTITY),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("listening", flush=True)
    server.wait_for_termination()


def call(port: int, shape: str, n: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        for i in range(n):
            body = f"m{i}".encode()
            if shape == "unary":
                assert channel.unary_unary("/demo.Echo/Unary")(body) == b"echo:" + body
            elif shape == "server_stream":
                assert len(list(channel.unary_stream("/demo.Echo/ServerStream")(body))) == 3
            elif shape == "client_stream":
                assert channel.stream_unary("/demo.Echo/ClientStream")(iter([body] * 4)) == b"4"
            elif shape == "bidi":
                assert len(list(channel.stream_stream("/demo.Echo/Bidi")(iter([body] * 2)))) == 2
            elif shape == "not_found":
                try:
                    channel.unary_unary("/demo.Echo/Fail")(body)
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.NOT_FOUND
            elif shape == "deadline":
                try:
                    channel.unary_unary("/demo.Echo/Slow")(body, timeout=0.2)
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            elif shape == "big":
                assert channel.unary_unary("/demo.Echo/Big")(body) == BIG
            elif shape == "big_fail":
                stream = channel.unary_stream("/demo.Echo/BigFail")(body)
                try:
                    assert next(stream) == BIG
                    next(stream)
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.NOT_FOUND
            else:
                sys.exit(f"unknown shape {shape}")


def session(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        unary = channel.unary_unary("/demo.Echo/Unary")
        for line in sys.stdin:
            n = int(line)
            for i in range(n):
                assert unary(f"s{i}".encode()) == f"echo:s{i}".encode()
            print(f"done {n}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    elif sys.argv[1] == "session":
        session(int(sys.argv[2]))
    else:
        call(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
