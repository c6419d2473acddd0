"""aiohttp test server: `python3 aiohttp_server.py PORT`. Routes: /ok, /chunked (streamed), /error (500)."""

import sys

from aiohttp import web


async def ok(request):
    return web.Response(text="hello from aiohttp\n")


async def chunked(request):
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for i in range(5):
        await resp.write(f"part-{i};".encode())
    await resp.write_eof()
    return resp


async def error(request):
    return web.Response(status=500, text="boom")


app = web.Application()
app.add_routes([web.get("/ok", ok), web.get("/chunked", chunked), web.get("/error", error)])

if __name__ == "__main__":
    print("listening", flush=True)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
