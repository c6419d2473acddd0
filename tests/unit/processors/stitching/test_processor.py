from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.id_generator import IdGenerator

from otel_ebpf.processinfo import ProcessInfoCache
from otel_ebpf.processors.stitching import StitchingConfig, StitchingProcessor, create_default_config
from otel_ebpf.records import Exchange, ParentSource, RequestStart, Role, SpanLink
from otel_ebpf.testing import ExchangeSink

from ...factories import make_exchange, make_fake_proc
from .flows import Flow

APP_A, APP_B, ENVOY = 100, 200, 900  # pids; the envoy one has a fake /proc entry naming /usr/local/bin/envoy
WORKER = 901  # an Envoy worker thread

T_IN, S_IN = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331  # context of an inbound request
T_2, S_2 = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7  # a second, unrelated one


def tp(trace_id: int, span_id: int, flags: str = "01") -> tuple[str, str]:
    return ("traceparent", f"00-{trace_id:032x}-{span_id:016x}-{flags}")


class CountingIds(IdGenerator):
    """Span ids 0x5001, 0x5002, ... and trace ids 0x7000...0001, ...: none collides with a header's ids."""

    def __init__(self) -> None:
        self.spans = 0
        self.traces = 0

    def generate_span_id(self) -> int:
        self.spans += 1
        return 0x5000 + self.spans

    def generate_trace_id(self) -> int:
        self.traces += 1
        return (0x7 << 124) + self.traces


class Stitch:
    """A StitchingProcessor fed by flows, forwarding to an ExchangeSink."""

    def __init__(self, proc_root, **config):
        self.sink = ExchangeSink()
        self.ids = CountingIds()
        self.processor = StitchingProcessor(StitchingConfig(**config), next_consumer=self.sink,
                                            process_info=ProcessInfoCache(proc_root=str(proc_root)),
                                            id_generator=self.ids)

    def begin(self, flow: Flow, *headers: tuple[str, str], tid: int | None = None, method: str = "GET",
              target: str = "/") -> RequestStart:
        start = flow.start(method, target, headers=headers, tid=tid)
        self.processor.request_started(start)
        return start

    def end(self, flow: Flow, start: RequestStart) -> Exchange | None:
        """Complete ``start``; the exchange forwarded for it, or None when none was."""
        before = len(self.sink.exchanges)
        self.processor.consume(flow.done(start))
        forwarded = self.sink.exchanges[before:]
        assert len(forwarded) <= 1
        return forwarded[0] if forwarded else None

    def count(self, name: str) -> int:
        return self.processor.stats()[f"otel_ebpf.stitching.{name}"]


@pytest.fixture
def proc_root(tmp_path):
    make_fake_proc(tmp_path, ENVOY, ["/usr/local/bin/envoy", "-c", "/etc/istio/proxy/envoy-rev.json"],
                   exe="/usr/local/bin/envoy")
    return tmp_path


@pytest.fixture
def stitch(proc_root):
    return Stitch(proc_root)


def inbound(pid: int = APP_A, tid: int = 101, port: int = 41000) -> Flow:
    return Flow(pid, tid, Role.SERVER, local=("10.0.0.1", 8080), remote=("10.0.0.9", port))


def outbound(pid: int = APP_A, tid: int = 101, port: int = 42000) -> Flow:
    return Flow(pid, tid, Role.CLIENT, local=("10.0.0.1", port), remote=("10.0.0.2", 80))


# ---- inbound requests ----


def test_an_inbound_request_with_a_traceparent_is_a_child_of_that_remote_span(stitch):
    server = inbound()
    start = stitch.begin(server, tp(T_IN, S_IN), ("tracestate", "congo=t61rcWkgMzE"))
    ident = stitch.end(server, start).trace
    assert (ident.trace_id, ident.parent_span_id) == (T_IN, S_IN)
    assert ident.span_id not in (0, S_IN)
    assert ident.remote_parent is True
    assert ident.parent_source == ParentSource.TRACEPARENT
    assert ident.trace_state == "congo=t61rcWkgMzE"
    assert stitch.count("parent.header") == 1


def test_an_inbound_request_whose_parent_is_not_sampled_is_not_sampled(stitch):
    server = inbound()
    assert stitch.end(server, stitch.begin(server, tp(T_IN, S_IN, flags="00"))).trace.sampled is False


def test_an_inbound_request_without_context_and_without_a_known_client_is_a_root(stitch):
    server = inbound()
    ident = stitch.end(server, stitch.begin(server)).trace
    assert ident.parent_span_id is None
    assert ident.parent_source == ParentSource.ROOT
    assert ident.trace_id and ident.span_id
    assert stitch.count("root") == 1


def test_conflicting_contexts_on_an_inbound_request_become_links_and_are_counted(stitch):
    server = inbound()
    b3 = ("b3", f"{T_2:032x}-{S_2:016x}-1")
    ident = stitch.end(server, stitch.begin(server, tp(T_IN, S_IN), b3)).trace
    assert ident.parent_span_id == S_IN
    assert ident.links == (SpanLink(T_2, S_2, "conflicting-b3"),)
    assert stitch.count("conflicts") == 1


# ---- outbound calls of a process serving inbound requests ----


def test_an_outbound_call_on_the_serving_thread_is_its_child_although_it_completes_first(stitch):
    server, client = inbound(), outbound()
    s_start = stitch.begin(server, tp(T_IN, S_IN))
    c_start = stitch.begin(client)
    client_ex = stitch.end(client, c_start)
    server_ex = stitch.end(server, s_start)
    assert [e.exchange_id for e in stitch.sink.exchanges] == [c_start.exchange_id, s_start.exchange_id]
    assert client_ex.trace.trace_id == server_ex.trace.trace_id == T_IN
    assert client_ex.trace.parent_span_id == server_ex.trace.span_id
    assert client_ex.trace.span_id != server_ex.trace.span_id
    assert client_ex.trace.parent_source == ParentSource.THREAD
    assert client_ex.trace.remote_parent is False
    assert stitch.count("parent.thread") == 1


def test_an_outbound_call_inherits_the_sampled_flag_of_its_inbound_parent(stitch):
    server, client = inbound(), outbound()
    stitch.begin(server, tp(T_IN, S_IN, flags="00"))
    assert stitch.end(client, stitch.begin(client)).trace.sampled is False


def test_an_outbound_call_on_another_thread_while_the_process_serves_one_request_is_its_child(stitch):
    server, client = inbound(tid=101), outbound(tid=155)
    s_start = stitch.begin(server, tp(T_IN, S_IN))
    ident = stitch.end(client, stitch.begin(client)).trace
    assert ident.parent_source == ParentSource.PROCESS
    assert (ident.trace_id, ident.parent_span_id) == (T_IN, stitch.end(server, s_start).trace.span_id)
    assert stitch.count("parent.process") == 1


def test_an_outbound_call_in_another_process_is_not_a_child_of_an_inbound_request(stitch):
    stitch.begin(inbound(pid=APP_A), tp(T_IN, S_IN))
    client = outbound(pid=APP_B)
    ident = stitch.end(client, stitch.begin(client)).trace
    assert (ident.parent_span_id, ident.parent_source, ident.links) == (None, ParentSource.ROOT, ())
    assert ident.trace_id != T_IN


def test_after_the_inbound_request_completes_an_outbound_call_on_its_thread_is_a_root(stitch):
    server, client = inbound(), outbound()
    stitch.end(server, stitch.begin(server, tp(T_IN, S_IN)))
    ident = stitch.end(client, stitch.begin(client)).trace
    assert (ident.parent_span_id, ident.parent_source) == (None, ParentSource.ROOT)


def test_two_inbound_requests_on_one_thread_leave_an_outbound_call_without_parent_but_linked_to_both(stitch):
    first, second, client = inbound(port=41000), inbound(port=41001), outbound()
    f_start, s_start = stitch.begin(first, tp(T_IN, S_IN)), stitch.begin(second, tp(T_2, S_2))
    ident = stitch.end(client, stitch.begin(client)).trace
    f_ident, s_ident = stitch.end(first, f_start).trace, stitch.end(second, s_start).trace
    assert ident.parent_span_id is None
    assert ident.parent_source == ParentSource.ROOT
    assert ident.trace_id not in (T_IN, T_2)
    assert set(ident.links) == {SpanLink(T_IN, f_ident.span_id, "ambiguous-parent"),
                                SpanLink(T_2, s_ident.span_id, "ambiguous-parent")}
    assert stitch.count("ambiguous") == 1


def test_two_inbound_requests_on_other_threads_of_the_process_also_leave_the_call_linked_to_both(stitch):
    stitch.begin(inbound(tid=101, port=41000), tp(T_IN, S_IN))
    stitch.begin(inbound(tid=102, port=41001), tp(T_2, S_2))
    client = outbound(tid=155)
    ident = stitch.end(client, stitch.begin(client)).trace
    assert ident.parent_span_id is None
    assert {link.trace_id for link in ident.links} == {T_IN, T_2}


def test_links_to_ambiguous_candidates_are_capped_at_eight(stitch):
    for port in range(41000, 41010):
        stitch.begin(inbound(port=port), tp(T_IN, port))
    client = outbound()
    assert len(stitch.end(client, stitch.begin(client)).trace.links) == 8


@pytest.mark.parametrize("forwarded", [0, 1], ids=["first inbound forwarded", "second inbound forwarded"])
def test_on_an_asyncio_thread_an_outbound_call_forwarding_one_inbound_context_verbatim_is_its_child(stitch,
                                                                                                 forwarded):
    contexts = [(T_IN, S_IN), (T_2, S_2)]
    servers = [inbound(port=41000), inbound(port=41001)]
    starts = [stitch.begin(flow, tp(*ctx)) for flow, ctx in zip(servers, contexts)]
    client = outbound()
    ident = stitch.end(client, stitch.begin(client, tp(*contexts[forwarded]))).trace
    idents = [stitch.end(flow, start).trace for flow, start in zip(servers, starts)]
    assert ident.parent_source == ParentSource.FORWARDED
    assert (ident.trace_id, ident.parent_span_id) == (idents[forwarded].trace_id, idents[forwarded].span_id)
    assert ident.parent_span_id != idents[1 - forwarded].span_id
    assert ident.links == ()
    assert stitch.count("parent.forwarded") == 1


def test_an_outbound_call_carrying_an_inbound_requests_x_request_id_is_its_child(stitch):
    first, second, client = inbound(port=41000), inbound(port=41001), outbound()
    f_start = stitch.begin(first, tp(T_IN, S_IN), ("x-request-id", "req-1"))
    stitch.begin(second, tp(T_2, S_2), ("x-request-id", "req-2"))
    ident = stitch.end(client, stitch.begin(client, ("x-request-id", "req-1"))).trace
    assert ident.parent_source == ParentSource.REQUEST_ID
    assert (ident.trace_id, ident.parent_span_id) == (T_IN, stitch.end(first, f_start).trace.span_id)
    assert stitch.count("parent.request_id") == 1


def test_an_x_request_id_of_an_inbound_request_in_another_process_is_no_parent(stitch):
    stitch.begin(inbound(pid=APP_B), tp(T_IN, S_IN), ("x-request-id", "req-1"))
    client = outbound(pid=APP_A)
    ident = stitch.end(client, stitch.begin(client, ("x-request-id", "req-1"))).trace
    assert (ident.parent_span_id, ident.parent_source) == (None, ParentSource.ROOT)


# ---- outbound calls instrumented by the app's own SDK ----


def test_an_outbound_call_carrying_a_context_the_app_made_is_not_forwarded_by_default(stitch):
    server, client = inbound(), outbound()
    s_start = stitch.begin(server, tp(T_IN, S_IN))
    app_span = 0x1234567890ABCDEF
    assert stitch.end(client, stitch.begin(client, tp(T_IN, app_span))) is None
    assert stitch.count("duplicate_client_suppressed") == 1
    assert stitch.end(server, s_start).trace.parent_span_id == S_IN


def test_with_suppression_off_an_instrumented_outbound_call_without_inbound_requests_parents_on_its_header(
        proc_root):
    stitch = Stitch(proc_root, suppress_instrumented_clients=False)
    client = outbound()
    app_span = 0x1234567890ABCDEF
    ident = stitch.end(client, stitch.begin(client, tp(T_IN, app_span))).trace
    assert (ident.trace_id, ident.parent_span_id, ident.parent_source) == (T_IN, app_span,
                                                                           ParentSource.TRACEPARENT)
    assert stitch.count("duplicate_client_suppressed") == 0


def test_with_suppression_off_an_instrumented_outbound_call_parents_on_its_header_not_on_the_thread(proc_root):
    stitch = Stitch(proc_root, suppress_instrumented_clients=False)
    server, client = inbound(), outbound()
    stitch.begin(server, tp(T_IN, S_IN))
    app_span = 0x1234567890ABCDEF
    ident = stitch.end(client, stitch.begin(client, tp(T_IN, app_span))).trace
    assert (ident.trace_id, ident.parent_span_id, ident.parent_source) == (T_IN, app_span,
                                                                           ParentSource.TRACEPARENT)


def test_with_suppression_off_an_instrumented_call_on_a_busy_asyncio_thread_stays_in_the_trace_it_carries(
        proc_root):
    stitch = Stitch(proc_root, suppress_instrumented_clients=False)
    stitch.begin(inbound(port=41000), tp(T_IN, S_IN))
    stitch.begin(inbound(port=41001), tp(T_2, S_2))
    client = outbound()
    app_span = 0x1234567890ABCDEF
    ident = stitch.end(client, stitch.begin(client, tp(T_IN, app_span))).trace
    assert (ident.trace_id, ident.parent_span_id) == (T_IN, app_span)


# ---- both ends of a connection on this host ----


def test_without_a_sidecar_the_server_end_of_a_connection_is_a_child_of_its_client_end(stitch):
    client = Flow(APP_A, 101, Role.CLIENT, local=("127.0.0.1", 5000), remote=("127.0.0.1", 8080))
    server = Flow(APP_B, 201, Role.SERVER, local=("127.0.0.1", 8080), remote=("127.0.0.1", 5000))
    c_start = stitch.begin(client)
    s_start = stitch.begin(server)
    server_ident = stitch.end(server, s_start).trace
    client_ident = stitch.end(client, c_start).trace
    assert server_ident.parent_source == ParentSource.CONNECTION
    assert (server_ident.trace_id, server_ident.parent_span_id) == (client_ident.trace_id, client_ident.span_id)
    assert server_ident.remote_parent is False
    assert stitch.count("parent.connection") == 1


def test_a_server_end_whose_connection_has_another_client_port_is_not_its_child(stitch):
    client = Flow(APP_A, 101, Role.CLIENT, local=("127.0.0.1", 5000), remote=("127.0.0.1", 8080))
    server = Flow(APP_B, 201, Role.SERVER, local=("127.0.0.1", 8080), remote=("127.0.0.1", 5001))
    stitch.begin(client)
    ident = stitch.end(server, stitch.begin(server)).trace
    assert (ident.parent_span_id, ident.parent_source) == (None, ParentSource.ROOT)


# ---- Envoy ----


@pytest.mark.parametrize(("pid", "role", "local", "remote"), [
    pytest.param(ENVOY, Role.SERVER, ("10.0.0.1", 8080), ("10.0.0.9", 41000), id="envoy process"),
    pytest.param(APP_A, Role.SERVER, ("10.0.0.1", 15006), ("10.0.0.9", 41000), id="inbound port 15006"),
    pytest.param(APP_A, Role.SERVER, ("10.0.0.1", 15001), ("10.0.0.1", 42000), id="outbound port 15001"),
    pytest.param(APP_A, Role.CLIENT, ("127.0.0.6", 44000), ("10.0.0.1", 8080), id="passthrough address"),
])
def test_exchanges_on_envoys_own_sockets_are_never_forwarded(stitch, pid, role, local, remote):
    flow = Flow(pid, WORKER, role, local=local, remote=remote)
    assert stitch.end(flow, stitch.begin(flow, tp(T_IN, S_IN))) is None
    assert stitch.count("envoy_suppressed") == 1
    assert stitch.sink.exchanges == []


def test_envoy_ends_are_recognised_by_port_and_address_without_process_names(proc_root):
    stitch = Stitch(proc_root, envoy_process_names=[])
    by_name = Flow(ENVOY, WORKER, Role.SERVER, local=("10.0.0.1", 8080), remote=("10.0.0.9", 41000))
    by_port = Flow(ENVOY, WORKER, Role.SERVER, local=("10.0.0.1", 15006), remote=("10.0.0.9", 41001))
    assert stitch.end(by_name, stitch.begin(by_name)) is not None
    assert stitch.end(by_port, stitch.begin(by_port)) is None


class Mesh:
    """App A serving T_IN calls B through Envoy: A's outbound connection, mirrored by Envoy's inbound end."""

    def __init__(self, stitch: Stitch):
        self.stitch = stitch
        self.server_a = inbound(pid=APP_A, tid=101)
        self.client_a = Flow(APP_A, 101, Role.CLIENT, local=("10.0.0.1", 43000), remote=("10.0.0.3", 8080))
        self.envoy_in = Flow(ENVOY, WORKER, Role.SERVER, local=("10.0.0.3", 8080), remote=("10.0.0.1", 43000))
        self.envoy_out = Flow(ENVOY, WORKER, Role.CLIENT, local=("10.0.0.1", 50000), remote=("10.0.0.3", 8080))
        self.server_b = Flow(APP_B, 201, Role.SERVER, local=("10.0.0.3", 8080), remote=("10.0.0.1", 50000))

    def call(self, *egress_headers: tuple[str, str], b_headers: tuple[tuple[str, str], ...] | None = None):
        """A's call through Envoy to B, in kernel order; (A's CLIENT identity, B's SERVER identity)."""
        st = self.stitch
        a_start = st.begin(self.server_a, tp(T_IN, S_IN))
        c_start = st.begin(self.client_a)  # the app propagates nothing
        e_in = st.begin(self.envoy_in)
        e_out = st.begin(self.envoy_out, *egress_headers)
        b_start = st.begin(self.server_b, *(egress_headers if b_headers is None else b_headers))
        b_ident = st.end(self.server_b, b_start).trace
        assert st.end(self.envoy_out, e_out) is None
        assert st.end(self.envoy_in, e_in) is None
        c_ident = st.end(self.client_a, c_start).trace
        st.end(self.server_a, a_start)
        return c_ident, b_ident


def test_when_envoy_restarts_the_trace_on_egress_the_apps_call_and_the_downstream_server_link_both_ways(stitch):
    client, server_b = Mesh(stitch).call(tp(T_2, S_2))
    assert client.trace_id == T_IN
    assert client.links == (SpanLink(T_2, S_2, "envoy-egress"),)
    assert (server_b.trace_id, server_b.parent_span_id) == (T_2, S_2)
    assert server_b.links == (SpanLink(client.trace_id, client.span_id, "envoy-restart"),)
    assert stitch.count("envoy_links") == 2
    assert stitch.count("envoy_suppressed") == 2


def test_when_envoy_continues_the_apps_trace_on_egress_nothing_is_linked(stitch):
    client, server_b = Mesh(stitch).call(tp(T_IN, S_2))
    assert client.links == ()
    assert server_b.links == ()
    assert stitch.count("envoy_links") == 0


def test_when_envoy_egress_carries_no_context_nothing_is_linked(stitch):
    client, _ = Mesh(stitch).call()
    assert client.links == ()
    assert stitch.count("envoy_links") == 0


def test_an_envoy_worker_forwarding_a_remote_callers_request_links_nothing_to_an_earlier_app_call(stitch):
    Mesh(stitch).call(tp(T_IN, S_2))  # the app's call is done, Envoy continued its trace
    # Then the same Envoy worker takes an inbound request from another pod, trace T_2,
    # and forwards it from 127.0.0.6 to app B.
    envoy_in = Flow(ENVOY, WORKER, Role.SERVER, local=("10.0.0.3", 15006), remote=("10.0.0.77", 39000))
    envoy_out = Flow(ENVOY, WORKER, Role.CLIENT, local=("127.0.0.6", 51000), remote=("10.0.0.3", 8080))
    server_b = Flow(APP_B, 202, Role.SERVER, local=("10.0.0.3", 8080), remote=("127.0.0.6", 51000))
    stitch.begin(envoy_in, tp(T_2, S_2))
    stitch.begin(envoy_out, tp(T_2, 0x9999))
    ident = stitch.end(server_b, stitch.begin(server_b, tp(T_2, 0x9999))).trace
    assert ident.links == ()
    assert stitch.count("envoy_links") == 0


def test_envoys_egress_is_matched_to_the_request_its_worker_read_with_the_same_method_and_target(stitch):
    # One Envoy worker reads two app calls, then forwards the second one first, in a new trace.
    calls = [Flow(APP_A, 101, Role.CLIENT, local=("10.0.0.1", 43000 + i), remote=("10.0.0.3", 8080))
             for i in range(2)]
    reads = [Flow(ENVOY, WORKER, Role.SERVER, local=("10.0.0.3", 8080), remote=("10.0.0.1", 43000 + i))
             for i in range(2)]
    egress = Flow(ENVOY, WORKER, Role.CLIENT, local=("10.0.0.1", 50000), remote=("10.0.0.3", 8080))
    what = [("GET", "/a"), ("POST", "/b")]
    c_starts = []
    for call, read, (method, target) in zip(calls, reads, what):
        c_starts.append(stitch.begin(call, method=method, target=target))
        stitch.begin(read, method=method, target=target)
    stitch.begin(egress, tp(T_2, S_2), method="POST", target="/b")
    first, second = (stitch.end(call, start).trace for call, start in zip(calls, c_starts))
    assert first.links == ()
    assert second.links == (SpanLink(T_2, S_2, "envoy-egress"),)


def test_an_apps_call_seen_after_envoys_read_of_it_still_gets_its_envoy_egress_link(stitch):
    mesh = Mesh(stitch)
    e_in = stitch.begin(mesh.envoy_in)  # Envoy's read reaches the processor before the app's write
    c_start = stitch.begin(mesh.client_a)
    stitch.begin(mesh.envoy_out, tp(T_2, S_2))
    assert stitch.end(mesh.client_a, c_start).trace.links == (SpanLink(T_2, S_2, "envoy-egress"),)
    assert stitch.end(mesh.envoy_in, e_in) is None


def test_a_request_envoy_answered_itself_does_not_take_the_envoy_egress_link_of_a_later_call(stitch):
    # Envoy answers the app's first call locally (503 no healthy upstream, rate limit, fault abort).
    first = Flow(APP_A, 101, Role.CLIENT, local=("10.0.0.1", 43000), remote=("10.0.0.3", 8080))
    first_read = Flow(ENVOY, WORKER, Role.SERVER, local=("10.0.0.3", 8080), remote=("10.0.0.1", 43000))
    c_start, r_start = stitch.begin(first), stitch.begin(first_read)
    assert stitch.end(first_read, r_start) is None
    stitch.end(first, c_start)
    # The same call again on a new connection, read by the same worker, forwarded in a new trace.
    second = Flow(APP_A, 101, Role.CLIENT, local=("10.0.0.1", 43001), remote=("10.0.0.3", 8080))
    second_read = Flow(ENVOY, WORKER, Role.SERVER, local=("10.0.0.3", 8080), remote=("10.0.0.1", 43001))
    egress = Flow(ENVOY, WORKER, Role.CLIENT, local=("10.0.0.1", 50000), remote=("10.0.0.3", 8080))
    c_start = stitch.begin(second)
    stitch.begin(second_read)
    stitch.begin(egress, tp(T_2, S_2))
    assert stitch.end(second, c_start).trace.links == (SpanLink(T_2, S_2, "envoy-egress"),)


# ---- bookkeeping ----


def test_an_exchange_whose_request_head_was_never_seen_is_forwarded_unchanged_and_counted(stitch):
    exchange = make_exchange(headers=(tp(T_IN, S_IN),))
    stitch.processor.consume(exchange)
    assert stitch.sink.exchanges == [exchange]
    assert stitch.sink.exchanges[0].trace is None
    assert stitch.count("unmatched") == 1


def test_requests_beyond_max_in_flight_evict_the_oldest_which_then_completes_unmatched(proc_root):
    stitch = Stitch(proc_root, max_in_flight=2)
    flows = [inbound(tid=101 + i, port=41000 + i) for i in range(3)]
    starts = [stitch.begin(flow, tp(T_IN, S_IN + i)) for i, flow in enumerate(flows)]
    assert stitch.count("evicted") == 1
    assert stitch.count("in_flight") == 2
    results = [stitch.end(flow, start) for flow, start in zip(flows, starts)]
    assert results[0].trace is None
    assert [r.trace.parent_span_id for r in results[1:]] == [S_IN + 1, S_IN + 2]
    assert stitch.count("unmatched") == 1
    assert stitch.count("in_flight") == 0


def test_an_evicted_inbound_request_is_no_longer_a_parent(proc_root):
    stitch = Stitch(proc_root, max_in_flight=2)
    stitch.begin(inbound(tid=101, port=41000), tp(T_IN, S_IN))
    stitch.begin(inbound(tid=102, port=41001), tp(T_2, S_2))
    stitch.begin(inbound(tid=103, port=41002), tp(T_2, S_2 + 1))  # evicts the first
    client = outbound(tid=101)  # on the evicted request's thread; admitting it evicts the second
    ident = stitch.end(client, stitch.begin(client)).trace
    assert ident.parent_source == ParentSource.PROCESS
    assert ident.trace_id == T_2
    assert stitch.count("evicted") == 2


# ---- configuration ----


def test_the_default_configuration_is_valid():
    create_default_config().validate()


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("envoy_process_names", "envoy", "processors.stitching.envoy_process_names: must be a list"),
    ("envoy_process_names", [""], "processors.stitching.envoy_process_names: '' is not a process name"),
    ("envoy_ports", [0], "processors.stitching.envoy_ports: 0 is not a TCP port"),
    ("envoy_ports", [65536], "processors.stitching.envoy_ports: 65536 is not a TCP port"),
    ("envoy_ports", [True], "processors.stitching.envoy_ports: True is not a TCP port"),
    ("envoy_ports", ["15001"], "processors.stitching.envoy_ports: '15001' is not a TCP port"),
    ("envoy_addresses", ["127.0.0.300"], "processors.stitching.envoy_addresses: '127.0.0.300' is not an IP address"),
    ("envoy_addresses", [None], "processors.stitching.envoy_addresses: None is not an IP address"),
    ("suppress_instrumented_clients", "yes", "processors.stitching.suppress_instrumented_clients: must be true or"),
    ("max_in_flight", 0, "processors.stitching.max_in_flight: must be a positive integer"),
    ("max_in_flight", True, "processors.stitching.max_in_flight: must be a positive integer"),
])
def test_validate_names_the_yaml_key_of_a_bad_setting(setting, value, message):
    with pytest.raises(ValueError) as info:
        StitchingConfig(**{setting: value}).validate()
    assert str(info.value).startswith(message)


def test_validate_prefixes_messages_with_the_key_it_is_given():
    with pytest.raises(ValueError, match=r"^processors\.stitching/mesh\.max_in_flight: "):
        StitchingConfig(max_in_flight=-1).validate("processors.stitching/mesh")


def test_the_processor_refuses_an_invalid_configuration():
    with pytest.raises(ValueError, match="envoy_ports"):
        StitchingProcessor(StitchingConfig(envoy_ports=[70000]), next_consumer=ExchangeSink())


def test_validate_refuses_a_number_in_envoy_addresses():
    with pytest.raises(ValueError, match="envoy_addresses"):
        StitchingConfig(envoy_addresses=[2130706438]).validate()
