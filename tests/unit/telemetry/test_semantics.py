from __future__ import annotations

import pytest
from opentelemetry.semconv._incubating.attributes.http_attributes import (
    HTTP_REQUEST_BODY_SIZE,
    HTTP_RESPONSE_BODY_SIZE,
)
from opentelemetry.semconv._incubating.attributes.thread_attributes import THREAD_ID
from opentelemetry.semconv._incubating.attributes.url_attributes import URL_TEMPLATE
from opentelemetry.semconv.attributes.client_attributes import CLIENT_ADDRESS, CLIENT_PORT
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import (
    HTTP_REQUEST_METHOD,
    HTTP_REQUEST_METHOD_ORIGINAL,
    HTTP_RESPONSE_STATUS_CODE,
    HTTP_ROUTE,
)
from opentelemetry.semconv.attributes.network_attributes import (
    NETWORK_LOCAL_ADDRESS,
    NETWORK_LOCAL_PORT,
    NETWORK_PEER_ADDRESS,
    NETWORK_PEER_PORT,
    NETWORK_PROTOCOL_VERSION,
)
from opentelemetry.semconv.attributes.server_attributes import SERVER_ADDRESS, SERVER_PORT
from opentelemetry.semconv.attributes.url_attributes import URL_FULL, URL_PATH, URL_QUERY, URL_SCHEME
from opentelemetry.semconv.attributes.user_agent_attributes import USER_AGENT_ORIGINAL
from opentelemetry.trace import SpanKind
from opentelemetry.trace.status import StatusCode

from otel_ebpf.records import Role
from otel_ebpf.telemetry import semantics
from otel_ebpf.telemetry.semantics import (
    ERROR_RESPONSE_MISSING,
    describe,
    metric_attributes,
    parent_context,
    span_attributes,
    span_kind,
    span_name,
    span_status,
)

from ..factories import make_exchange

TRACE_HEX = "0af7651916cd43dd8448eb211c80319c"
SPAN_HEX = "b7ad6b7169203331"


def _tp(value, *more):
    return make_exchange(headers=(("traceparent", value), *[("traceparent", m) for m in more]))


# -- names and kinds -------------------------------------------------------------------------


def test_the_span_name_is_the_method_and_the_route_when_a_route_matched():
    assert span_name(make_exchange(route="/users/{id}")) == "GET /users/{id}"


def test_the_span_name_is_only_the_method_without_a_route_even_with_a_guessed_template():
    assert span_name(make_exchange(url_template="/users/{id}")) == "GET"


def test_unknown_methods_become_other_with_the_original_kept_and_an_http_span_name():
    ex = make_exchange(method="PROPFIND", route="/dav")
    sem = describe(ex)
    assert sem.name == "HTTP /dav"
    assert span_name(ex) == "HTTP /dav"
    assert sem.attributes[HTTP_REQUEST_METHOD] == "_OTHER"
    assert sem.attributes[HTTP_REQUEST_METHOD_ORIGINAL] == "PROPFIND"
    assert sem.metric_attributes[HTTP_REQUEST_METHOD] == "_OTHER"


def test_methods_are_case_sensitive():
    attrs = span_attributes(make_exchange(method="get"))
    assert attrs[HTTP_REQUEST_METHOD] == "_OTHER"
    assert attrs[HTTP_REQUEST_METHOD_ORIGINAL] == "get"


def test_known_methods_include_query_and_leave_no_original_attribute():
    for method in ("GET", "POST", "PATCH", "QUERY", "CONNECT", "TRACE"):
        attrs = span_attributes(make_exchange(method=method))
        assert attrs[HTTP_REQUEST_METHOD] == method
        assert HTTP_REQUEST_METHOD_ORIGINAL not in attrs


def test_the_known_method_list_can_be_overridden():
    try:
        semantics.set_known_methods({"GET", "PROPFIND"})
        assert span_attributes(make_exchange(method="PROPFIND"))[HTTP_REQUEST_METHOD] == "PROPFIND"
        assert span_attributes(make_exchange(method="POST"))[HTTP_REQUEST_METHOD] == "_OTHER"
    finally:
        semantics.set_known_methods(None)
    assert span_attributes(make_exchange(method="POST"))[HTTP_REQUEST_METHOD] == "POST"


@pytest.mark.parametrize(
    ("role", "kind"), [(Role.SERVER, SpanKind.SERVER), (Role.CLIENT, SpanKind.CLIENT), (Role.UNKNOWN, SpanKind.INTERNAL)]
)
def test_the_span_kind_follows_the_role(role, kind):
    assert span_kind(make_exchange(role=role)) == kind
    assert describe(make_exchange(role=role)).kind == kind


# -- server spans ------------------------------------------------------------------------------


def test_a_server_span_has_the_stable_server_attributes():
    ex = make_exchange(
        target="/users/42?x=1",
        headers=(("host", "Shop.Example:8080"), ("user-agent", "curl/8.0")),
        route="/users/{id}",
        url_template="/users/{id}",
        request_body=3,
        response_body=5,
    )
    assert span_attributes(ex) == {
        HTTP_REQUEST_METHOD: "GET",
        URL_PATH: "/users/42",
        URL_QUERY: "x=1",
        URL_SCHEME: "http",
        SERVER_ADDRESS: "shop.example",
        SERVER_PORT: 8080,
        CLIENT_ADDRESS: "10.0.0.2",
        CLIENT_PORT: 54321,
        NETWORK_LOCAL_ADDRESS: "10.0.0.1",
        NETWORK_LOCAL_PORT: 8080,
        NETWORK_PEER_ADDRESS: "10.0.0.2",
        NETWORK_PEER_PORT: 54321,
        NETWORK_PROTOCOL_VERSION: "1.1",
        HTTP_RESPONSE_STATUS_CODE: 200,
        USER_AGENT_ORIGINAL: "curl/8.0",
        HTTP_REQUEST_BODY_SIZE: 3,
        HTTP_RESPONSE_BODY_SIZE: 5,
        URL_TEMPLATE: "/users/{id}",
        HTTP_ROUTE: "/users/{id}",
        THREAD_ID: 4243,
    }


def test_a_server_without_a_host_header_has_no_server_address_but_keeps_the_local_socket():
    attrs = span_attributes(make_exchange(version="1.0", headers=()))
    assert SERVER_ADDRESS not in attrs and SERVER_PORT not in attrs
    assert attrs[NETWORK_LOCAL_ADDRESS] == "10.0.0.1"
    assert attrs[NETWORK_PROTOCOL_VERSION] == "1.0"


def test_a_host_without_a_port_gets_the_default_port_of_the_scheme():
    assert span_attributes(make_exchange(headers=(("host", "a.example"),)))[SERVER_PORT] == 80
    attrs = span_attributes(make_exchange(headers=(("host", "a.example"), ("x-forwarded-proto", "https"))))
    assert attrs[URL_SCHEME] == "https"
    assert attrs[SERVER_PORT] == 443


def test_forwarded_headers_give_the_original_host_scheme_and_client():
    ex = make_exchange(
        headers=(
            ("host", "backend:8080"),
            ("forwarded", 'for="[2001:db8::17]:4711";proto=https;host=shop.example, for=10.1.1.1'),
            ("x-forwarded-host", "ignored.example"),
            ("x-forwarded-for", "192.0.2.1"),
        )
    )
    attrs = span_attributes(ex)
    assert (attrs[SERVER_ADDRESS], attrs[SERVER_PORT], attrs[URL_SCHEME]) == ("shop.example", 443, "https")
    assert (attrs[CLIENT_ADDRESS], attrs[CLIENT_PORT]) == ("2001:db8::17", 4711)
    assert attrs[NETWORK_PEER_ADDRESS] == "10.0.0.2"


def test_x_forwarded_headers_are_used_without_forwarded():
    ex = make_exchange(
        headers=(
            ("host", "backend:8080"),
            ("x-forwarded-host", "shop.example:8443, proxy"),
            ("x-forwarded-for", "192.0.2.1, 10.0.0.9"),
        )
    )
    attrs = span_attributes(ex)
    assert (attrs[SERVER_ADDRESS], attrs[SERVER_PORT]) == ("shop.example", 8443)
    assert attrs[CLIENT_ADDRESS] == "192.0.2.1"
    assert CLIENT_PORT not in attrs


def test_an_obfuscated_forwarded_for_falls_back_to_the_next_source():
    ex = make_exchange(headers=(("forwarded", "for=_hidden"), ("x-forwarded-for", "192.0.2.1")))
    assert span_attributes(ex)[CLIENT_ADDRESS] == "192.0.2.1"


def test_an_ipv6_host_header_is_parsed():
    attrs = span_attributes(make_exchange(headers=(("host", "[::1]:8080"),)))
    assert (attrs[SERVER_ADDRESS], attrs[SERVER_PORT]) == ("::1", 8080)


def test_a_bad_host_port_is_left_out():
    attrs = span_attributes(make_exchange(headers=(("host", "a.example:99999"),)))
    assert attrs[SERVER_ADDRESS] == "a.example"
    assert attrs[SERVER_PORT] == 80


def test_the_query_is_present_only_when_the_target_had_a_question_mark():
    assert URL_QUERY not in span_attributes(make_exchange(target="/a"))
    assert span_attributes(make_exchange(target="/a?"))[URL_QUERY] == ""
    assert span_attributes(make_exchange(target="/a?b=1#f"))[URL_QUERY] == "b=1"


def test_an_absolute_form_target_on_a_server_gives_the_path_and_authority():
    attrs = span_attributes(make_exchange(target="http://proxy.example:3128/x?y=1", headers=()))
    assert (attrs[URL_PATH], attrs[URL_QUERY]) == ("/x", "y=1")
    assert (attrs[SERVER_ADDRESS], attrs[SERVER_PORT]) == ("proxy.example", 3128)


def test_asterisk_and_authority_form_targets():
    assert span_attributes(make_exchange(method="OPTIONS", target="*"))[URL_PATH] == "*"
    assert URL_PATH not in span_attributes(make_exchange(method="CONNECT", target="h.example:443"))


# -- client spans ------------------------------------------------------------------------------


def test_a_client_span_has_the_full_url_and_the_server_it_called():
    ex = make_exchange(
        role=Role.CLIENT,
        target="/v1/pay?id=7",
        headers=(("host", "payments:9090"),),
        local=("10.0.0.2", 40000),
        remote=("10.0.0.3", 9090),
    )
    attrs = span_attributes(ex)
    assert attrs[URL_FULL] == "http://payments:9090/v1/pay?id=7"
    assert (attrs[SERVER_ADDRESS], attrs[SERVER_PORT]) == ("payments", 9090)
    assert (attrs[NETWORK_PEER_ADDRESS], attrs[NETWORK_PEER_PORT]) == ("10.0.0.3", 9090)
    for key in (URL_PATH, URL_QUERY, CLIENT_ADDRESS, NETWORK_LOCAL_ADDRESS):
        assert key not in attrs


def test_a_client_without_host_uses_the_connected_address():
    ex = make_exchange(role=Role.CLIENT, target="/x", headers=(), remote=("fd00::5", 8080))
    attrs = span_attributes(ex)
    assert attrs[URL_FULL] == "http://[fd00::5]:8080/x"
    assert (attrs[SERVER_ADDRESS], attrs[SERVER_PORT]) == ("fd00::5", 8080)


def test_a_client_absolute_form_target_is_the_full_url_without_credentials():
    ex = make_exchange(role=Role.CLIENT, target="https://u:p@api.example/x?q=1#frag", headers=())
    attrs = span_attributes(ex)
    assert attrs[URL_FULL] == "https://REDACTED:REDACTED@api.example/x?q=1"
    assert (attrs[SERVER_ADDRESS], attrs[SERVER_PORT], attrs[URL_SCHEME]) == ("api.example", 443, "https")


def test_clients_ignore_forwarded_headers_they_send():
    ex = make_exchange(role=Role.CLIENT, headers=(("host", "a:1"), ("x-forwarded-proto", "https")))
    assert span_attributes(ex)[URL_SCHEME] == "http"


# -- status and error.type ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "code", "error"),
    [
        (Role.SERVER, 200, None),
        (Role.SERVER, 302, None),
        (Role.SERVER, 404, None),
        (Role.SERVER, 500, "500"),
        (Role.SERVER, 503, "503"),
        (Role.CLIENT, 404, "404"),
        (Role.CLIENT, 200, None),
        (Role.CLIENT, 502, "502"),
        (Role.UNKNOWN, 404, None),
        (Role.UNKNOWN, 500, "500"),
        (Role.SERVER, 600, "600"),
        (Role.CLIENT, 42, "42"),
    ],
)
def test_status_and_error_type_follow_the_semconv_rules(role, code, error):
    ex = make_exchange(role=role, status=code)
    status = span_status(ex)
    attrs = span_attributes(ex)
    if error is None:
        assert status.status_code is StatusCode.UNSET
        assert ERROR_TYPE not in attrs
        assert ERROR_TYPE not in metric_attributes(ex)
    else:
        assert status.status_code is StatusCode.ERROR
        assert status.description is None
        assert attrs[ERROR_TYPE] == error
        assert metric_attributes(ex)[ERROR_TYPE] == error


def test_a_missing_response_is_an_error_of_its_own_type():
    ex = make_exchange(status=None)
    sem = describe(ex)
    assert sem.status.status_code is StatusCode.ERROR
    assert sem.attributes[ERROR_TYPE] == ERROR_RESPONSE_MISSING == "response_missing"
    assert HTTP_RESPONSE_STATUS_CODE not in sem.attributes
    assert HTTP_RESPONSE_BODY_SIZE not in sem.attributes
    assert sem.metric_attributes[ERROR_TYPE] == "response_missing"


# -- metric attributes -------------------------------------------------------------------------


def test_server_metric_attributes_are_the_low_cardinality_subset():
    ex = make_exchange(route="/users/{id}", url_template="/users/{id}")
    assert metric_attributes(ex) == {
        HTTP_REQUEST_METHOD: "GET",
        HTTP_RESPONSE_STATUS_CODE: 200,
        HTTP_ROUTE: "/users/{id}",
        URL_SCHEME: "http",
        NETWORK_PROTOCOL_VERSION: "1.1",
    }


def test_client_metric_attributes_name_the_server():
    ex = make_exchange(role=Role.CLIENT, headers=(("host", "payments:9090"),), route="/x")
    assert metric_attributes(ex) == {
        HTTP_REQUEST_METHOD: "GET",
        HTTP_RESPONSE_STATUS_CODE: 200,
        SERVER_ADDRESS: "payments",
        SERVER_PORT: 9090,
        URL_SCHEME: "http",
        NETWORK_PROTOCOL_VERSION: "1.1",
    }


def test_server_metric_attributes_have_no_route_without_a_configured_match():
    assert HTTP_ROUTE not in metric_attributes(make_exchange(url_template="/users/{id}"))


# -- trace context -----------------------------------------------------------------------------


def test_a_valid_traceparent_gives_the_remote_parent():
    parent = parent_context(_tp(f"00-{TRACE_HEX}-{SPAN_HEX}-01"))
    assert parent.trace_id == int(TRACE_HEX, 16)
    assert parent.span_id == int(SPAN_HEX, 16)
    assert parent.sampled is True
    assert len(parent.trace_state) == 0
    assert describe(_tp(f"00-{TRACE_HEX}-{SPAN_HEX}-01")).parent == parent


def test_the_sampled_flag_is_the_lowest_bit():
    assert parent_context(_tp(f"00-{TRACE_HEX}-{SPAN_HEX}-00")).sampled is False
    assert parent_context(_tp(f"00-{TRACE_HEX}-{SPAN_HEX}-03")).sampled is True
    assert parent_context(_tp(f"00-{TRACE_HEX}-{SPAN_HEX}-02")).sampled is False


def test_surrounding_whitespace_is_allowed():
    assert parent_context(_tp(f" \t00-{TRACE_HEX}-{SPAN_HEX}-01 ")) is not None


def test_a_later_version_may_carry_more_fields():
    assert parent_context(_tp(f"cc-{TRACE_HEX}-{SPAN_HEX}-01-what-the-future-holds")) is not None
    assert parent_context(_tp(f"cc-{TRACE_HEX}-{SPAN_HEX}-01")) is not None


@pytest.mark.parametrize(
    "value",
    [
        f"ff-{TRACE_HEX}-{SPAN_HEX}-01",  # version ff is invalid
        f"00-{'0' * 32}-{SPAN_HEX}-01",  # all-zero trace id
        f"00-{TRACE_HEX}-{'0' * 16}-01",  # all-zero span id
        f"00-{TRACE_HEX.upper()}-{SPAN_HEX}-01",  # upper-case hex
        f"00-{TRACE_HEX}-{SPAN_HEX}-01-extra",  # version 00 is exactly 55 characters
        f"cc-{TRACE_HEX}-{SPAN_HEX}-01x",  # later versions: more fields need a dash
        f"00-{TRACE_HEX}-{SPAN_HEX}-1",
        f"0-{TRACE_HEX}-{SPAN_HEX}-01",
        f"00-{TRACE_HEX[:-1]}-{SPAN_HEX}-01",
        f"00-{TRACE_HEX}-{SPAN_HEX}-0g",
        f"00_{TRACE_HEX}_{SPAN_HEX}_01",
        "",
        "garbage",
    ],
)
def test_invalid_traceparents_are_ignored(value):
    assert parent_context(_tp(value)) is None
    assert describe(_tp(value)).parent is None


def test_two_traceparent_headers_are_invalid():
    assert parent_context(_tp(f"00-{TRACE_HEX}-{SPAN_HEX}-01", f"00-{TRACE_HEX}-{SPAN_HEX}-01")) is None


def test_no_traceparent_means_no_parent():
    assert parent_context(make_exchange()) is None


def test_tracestate_is_kept_and_several_headers_are_combined():
    ex = make_exchange(
        headers=(
            ("traceparent", f"00-{TRACE_HEX}-{SPAN_HEX}-01"),
            ("tracestate", "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"),
            ("tracestate", "tenant@vendor=x"),
        )
    )
    state = parent_context(ex).trace_state
    assert dict(state) == {"congo": "t61rcWkgMzE", "rojo": "00f067aa0ba902b7", "tenant@vendor": "x"}


@pytest.mark.parametrize("value", ["Bad=1", "a=1,a=2", "a", "a=b=c", ",".join(f"k{i}=v" for i in range(33))])
def test_an_invalid_tracestate_is_dropped_but_the_parent_is_kept(value):
    ex = make_exchange(headers=(("traceparent", f"00-{TRACE_HEX}-{SPAN_HEX}-01"), ("tracestate", value)))
    parent = parent_context(ex)
    assert parent is not None
    assert len(parent.trace_state) == 0


# -- misc --------------------------------------------------------------------------------------


def test_optional_attributes_are_left_out_when_unknown():
    ex = make_exchange(headers=(), tid=0, version="")
    attrs = span_attributes(ex)
    for key in (USER_AGENT_ORIGINAL, THREAD_ID, NETWORK_PROTOCOL_VERSION, HTTP_ROUTE, URL_TEMPLATE):
        assert key not in attrs


def test_describe_agrees_with_the_single_purpose_functions():
    ex = make_exchange(role=Role.CLIENT, status=503, route="/r")
    sem = describe(ex)
    assert sem.name == span_name(ex)
    assert sem.kind == span_kind(ex)
    assert sem.attributes == span_attributes(ex)
    assert sem.metric_attributes == metric_attributes(ex)
    assert sem.status.status_code == span_status(ex).status_code
    assert sem.error_type == "503"
