"""Mesh test app on asyncio: an aiohttp server and one shared aiohttp ClientSession (pooled keep-alive).

    python3 asyncio_app.py --port P [--upstream http://127.0.0.1:Q] [--propagate none|forward]
                           [--sleep-ms N] [--record FILE]

Routes (same contract as threaded_app.py):
  GET /a/<n>  sleeps --sleep-ms, calls GET <upstream>/b/<n> on the event loop's single thread, and
              answers 200 with B's body (502 if that failed). --propagate none sends no trace headers
              at all; --propagate forward copies the inbound traceparent, tracestate, x-b3-*, b3 and
              x-request-id headers verbatim.
  GET /b/<n>  sleeps --sleep-ms and answers 200 with a small body.

Many requests interleave on one thread here, so "same pid + thread" does not identify the inbound
request an outbound call belongs to. With --record, one JSON line per request is appended before
the response is written (as threaded_app.py's, but aiohttp canonicalises well-known header names:
"X-Request-ID", not the "x-request-id" Envoy sent).
"""

import argparse
import asyncio
import json
import os
import threading

import aiohttp
from aiohttp import web

from mesh_headers import FORWARDED  # the apps run as scripts from this folder


def record(args, request, entry):
    if args.record:
        host, port = request.transport.get_extra_info("peername")[:2]
        entry = {
            "pid": os.getpid(),
            "tid": threading.get_native_id(),
            "peer": f"{host}:{port}",
            "path": request.path_qs,
            "headers": list(request.headers.items()),
            **entry,
        }
        with open(args.record, "a") as f:
            f.write(json.dumps(entry) + "\n")


def make_app(args):
    async def session_ctx(app):
        app["session"] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        yield
        await app["session"].close()

    async def route_a(request):
        n = request.match_info["n"]
        if args.sleep_ms:
            await asyncio.sleep(args.sleep_ms / 1000)
        sent = None
        if not args.upstream:
            status, body = 500, b"no --upstream\n"
        else:
            sent = {}
            if args.propagate == "forward":
                sent = {k: v for k, v in request.headers.items() if k.lower() in FORWARDED}
            try:
                async with request.app["session"].get(f"{args.upstream}/b/{n}", headers=sent) as response:
                    body = await response.read()
                    status = 200 if response.status == 200 else 502
            except (TimeoutError, aiohttp.ClientError) as error:
                status, body = 502, f"upstream failed: {error!r}\n".encode()
        record(args, request, {"upstream_headers": sent, "status": status})
        return web.Response(status=status, body=body, content_type="text/plain")

    async def route_b(request):
        n = request.match_info["n"]
        if args.sleep_ms:
            await asyncio.sleep(args.sleep_ms / 1000)
        record(args, request, {"upstream_headers": None, "status": 200})
        return web.Response(body=f"b{n} from {os.getpid()}\n".encode(), content_type="text/plain")

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.add_routes([web.get("/a/{n}", route_a), web.get("/b/{n}", route_b)])
    return app


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", default="", help="base URL that /a/<n> calls /b/<n> on")
    parser.add_argument("--propagate", choices=("none", "forward"), default="none")
    parser.add_argument("--sleep-ms", type=float, default=0)
    parser.add_argument("--record", default="", help="append one JSON line per request to this file")
    args = parser.parse_args()
    print("listening", flush=True)
    web.run_app(make_app(args), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
