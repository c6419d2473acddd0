"""Test data builders: Exchange records and fake /proc trees (plain data, no parsing involved)."""

from __future__ import annotations

from otel_ebpf.records import Connection, Exchange, HttpRequest, HttpResponse, Role

T0 = 1_700_000_000_000_000_000  # a wall-clock ns timestamp


def make_exchange(
    *,
    method: str = "GET",
    target: str = "/users/42?x=1",
    version: str = "1.1",
    headers: tuple[tuple[str, str], ...] = (("host", "shop.example:8080"), ("user-agent", "curl/8.0")),
    status: int | None = 200,
    response_headers: tuple[tuple[str, str], ...] = (("content-type", "text/plain"),),
    role: Role = Role.SERVER,
    pid: int = 4242,
    tid: int = 4243,
    start_ns: int = T0,
    duration_ns: int = 20_000_000,
    request_body: int = 0,
    response_body: int = 5,
    local: tuple[str, int] = ("10.0.0.1", 8080),
    remote: tuple[str, int] = ("10.0.0.2", 54321),
    route: str | None = None,
    url_template: str | None = None,
) -> Exchange:
    conn = Connection(
        pid=pid,
        fd=7,
        sock_id=0xFFFF0000,
        family=6 if ":" in local[0] else 4,
        local_address=local[0],
        local_port=local[1],
        remote_address=remote[0],
        remote_port=remote[1],
        role=role,
    )
    request = HttpRequest(method=method, target=target, version=version, headers=headers, body_size=request_body)
    response = (
        None
        if status is None
        else HttpResponse(status=status, reason="X", version=version, headers=response_headers, body_size=response_body)
    )
    return Exchange(
        protocol="http1",
        connection=conn,
        request=request,
        response=response,
        start_ns=start_ns,
        end_ns=start_ns + duration_ns,
        tid=tid,
        route=route,
        url_template=url_template,
    )


def make_fake_proc(
    root,
    pid: int,
    argv: list[str],
    *,
    exe: str | None = None,
    comm: str | None = None,
    environ: dict[str, str] | None = None,
) -> None:
    """Write a /proc/<pid> look-alike under ``root`` (a pathlib.Path)."""
    import os

    d = root / str(pid)
    d.mkdir(parents=True, exist_ok=True)
    (d / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))
    (d / "comm").write_text((comm if comm is not None else (argv[0].rsplit("/", 1)[-1] if argv else ""))[:15] + "\n")
    if exe is not None:
        link = d / "exe"
        if link.is_symlink():
            link.unlink()
        os.symlink(exe, link)
    if environ is not None:
        (d / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in environ.items()))
