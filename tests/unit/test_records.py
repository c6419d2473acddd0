"""Records: frozen dataclasses built by fast_init, and the in-place annotations of an exchange."""

from __future__ import annotations

import dataclasses

import pytest

from otel_ebpf.records import Connection, Exchange, HttpRequest, ParentSource, TraceIdentity, annotate, fast_init

from .factories import make_exchange


def test_fast_init_keeps_signature_defaults_equality_and_immutability():
    req = HttpRequest("GET", "/x", "1.1")
    assert (req.headers, req.body_size, req.trailers) == ((), 0, ())
    assert req == HttpRequest(method="GET", target="/x", version="1.1", headers=(), body_size=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.method = "POST"
    with pytest.raises(TypeError):
        HttpRequest("GET")  # required fields stay required
    with pytest.raises(TypeError):
        HttpRequest("GET", "/", "1.1", nonsense=1)
    conn = Connection(1, 2, 3, 4, "10.0.0.1", 80, "10.0.0.2", 5555)
    assert hash(conn) == hash(Connection(1, 2, 3, 4, "10.0.0.1", 80, "10.0.0.2", 5555))  # still hashable
    assert dataclasses.replace(req, target="/y") == HttpRequest("GET", "/y", "1.1")
    assert Exchange.__init__.__qualname__ == "Exchange.__init__"


def test_annotations_are_the_only_fields_set_in_place():
    ex = make_exchange()
    ident = TraceIdentity(1, 2, None, ParentSource.ROOT)
    assert annotate(ex, route="/users/{id}", trace=ident) is ex
    assert (ex.route, ex.trace) == ("/users/{id}", ident)
    with pytest.raises(TypeError):
        annotate(ex, request=None)


def test_fast_init_refuses_what_it_cannot_build():
    with pytest.raises(TypeError):
        @fast_init
        @dataclasses.dataclass(frozen=True, slots=True)
        class WithFactory:
            items: list = dataclasses.field(default_factory=list)
