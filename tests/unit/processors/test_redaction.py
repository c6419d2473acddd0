from __future__ import annotations

import dataclasses

import pytest

from otel_ebpf.processors.redaction import (
    REDACTED,
    RedactionConfig,
    RedactionProcessor,
    SecretKeyMatcher,
)
from otel_ebpf.records import HttpRequest

from ..factories import make_exchange


def _redact(target="/", headers=(), response_headers=(), config=None, status=200):
    processor = RedactionProcessor(config)
    return processor.process(
        make_exchange(target=target, headers=headers, response_headers=response_headers, status=status)
    )


def test_credential_headers_are_replaced_and_other_headers_are_kept():
    ex = _redact(
        headers=(
            ("host", "a"),
            ("authorization", "Bearer abc"),
            ("proxy-authorization", "Basic x"),
            ("cookie", "sid=1"),
            ("accept", "*/*"),
        ),
        response_headers=(("set-cookie", "sid=2; HttpOnly"), ("content-type", "text/html")),
    )
    assert ex.request.headers == (
        ("host", "a"),
        ("authorization", REDACTED),
        ("proxy-authorization", REDACTED),
        ("cookie", REDACTED),
        ("accept", "*/*"),
    )
    assert ex.response.headers == (("set-cookie", REDACTED), ("content-type", "text/html"))


def test_extra_header_names_from_the_config_are_redacted_case_insensitively():
    config = RedactionConfig(extra_headers=["X-Api-Key"])
    ex = _redact(headers=(("x-api-key", "k"), ("x-other", "v")), config=config)
    assert ex.request.headers == (("x-api-key", REDACTED), ("x-other", "v"))


def test_trailers_are_redacted_too():
    processor = RedactionProcessor()
    ex = make_exchange()
    ex = dataclasses.replace(ex, request=dataclasses.replace(ex.request, trailers=(("authorization", "x"),)))
    assert processor.process(ex).request.trailers == (("authorization", REDACTED),)


def test_secret_query_values_are_replaced_while_keys_and_order_are_kept():
    ex = _redact(target="/cb?state=xyz&code=abc&access_token=t0k&page=2&api_key=k#frag")
    assert ex.request.target == f"/cb?state=xyz&code={REDACTED}&access_token={REDACTED}&page=2&api_key={REDACTED}#frag"


@pytest.mark.parametrize("key", ["AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"])
def test_the_keys_semconv_asks_to_redact_are_redacted(key):
    assert _redact(target=f"/o?{key}=v&x=1").request.target == f"/o?{key}={REDACTED}&x=1"


@pytest.mark.parametrize(
    "key", ["password", "db_password", "client_secret", "X-Auth-Token", "refresh_token", "sessionid", "jwt", "api%5Fkey"]
)
def test_keys_that_look_secret_are_redacted(key):
    assert _redact(target=f"/p?{key}=v").request.target == f"/p?{key}={REDACTED}"


@pytest.mark.parametrize("key", ["q", "page", "author", "monkey", "sort", "id", "state"])
def test_ordinary_keys_are_left_alone(key):
    assert _redact(target=f"/p?{key}=v").request.target == f"/p?{key}=v"


def test_empty_values_and_keys_without_values_are_left_as_they_are():
    assert _redact(target="/p?token=&password&x=1").request.target == "/p?token=&password&x=1"


def test_a_configured_pattern_replaces_the_default_one():
    config = RedactionConfig(query_keys=[], query_key_pattern=r"^tenant$")
    assert _redact(target="/p?tenant=a&token=b", config=config).request.target == f"/p?tenant={REDACTED}&token=b"


def test_user_information_in_an_absolute_form_target_is_replaced():
    ex = _redact(target="http://bob:hunter2@example.com/x?sig=1")
    assert ex.request.target == f"http://{REDACTED}:{REDACTED}@example.com/x?sig={REDACTED}"


def test_url_valued_headers_have_their_secrets_redacted():
    ex = _redact(
        headers=(("referer", "https://a.example/cb?code=123&x=1"),),
        response_headers=(("location", "https://u:p@b.example/next?token=9"),),
    )
    assert ex.request.headers == (("referer", f"https://a.example/cb?code={REDACTED}&x=1"),)
    assert ex.response.headers == (("location", f"https://{REDACTED}:{REDACTED}@b.example/next?token={REDACTED}"),)


def test_an_exchange_with_nothing_to_hide_is_returned_unchanged():
    ex = make_exchange(target="/a?b=c", headers=(("host", "x"),))
    assert RedactionProcessor().process(ex) is ex


def test_processing_returns_a_new_exchange_and_leaves_the_original_alone():
    ex = make_exchange(target="/a?token=x", headers=(("authorization", "y"),))
    out = RedactionProcessor().process(ex)
    assert out is not ex
    assert ex.request.target == "/a?token=x"
    assert ex.request.headers == (("authorization", "y"),)


def test_a_missing_response_is_fine():
    assert _redact(target="/a?token=x", status=None).response is None


@pytest.mark.parametrize(
    "target",
    ["", "?", "??&&==", "/%zz?%zz=%zz&token=%", "/a?&&&token==x==&", "*", "host:443", "/\u00e9?\u00e9=\u00e9", "@", "x" * 10000],
)
def test_odd_targets_never_raise(target):
    ex = _redact(target=target, headers=(("cookie", ""), ("referer", "::::@@??==")))
    assert isinstance(ex.request.target, str)
    assert "token=x" not in ex.request.target


def test_an_input_that_breaks_the_rules_falls_back_to_dropping_the_query():
    processor = RedactionProcessor()
    ex = make_exchange(headers=(("authorization", "secret"),))
    broken = dataclasses.replace(ex, request=HttpRequest(method="GET", target=None, version="1.1", headers=ex.request.headers))  # type: ignore[arg-type]
    out = processor.process(broken)
    assert processor.errors == 1
    assert out.request.headers == (("authorization", REDACTED),)


def test_the_key_decision_cache_is_bounded_and_counts_evictions():
    matcher = SecretKeyMatcher(cache_size=2)
    for key in ["a", "b", "c", "d", "e"]:
        matcher(key)
    assert len(matcher._cache) <= 2
    assert matcher.cache_evictions > 0


def test_the_default_config_is_valid():
    RedactionConfig.create_default_config().validate()


@pytest.mark.parametrize(
    ("config", "key"),
    [
        (RedactionConfig(query_key_pattern="("), "redaction.query_key_pattern:"),
        (RedactionConfig(query_keys="token"), "redaction.query_keys:"),  # type: ignore[arg-type]
        (RedactionConfig(query_keys=[""]), "redaction.query_keys:"),
        (RedactionConfig(extra_headers=["bad name"]), "redaction.extra_headers:"),
        (RedactionConfig(cache_size=0), "redaction.cache_size:"),
    ],
)
def test_validation_errors_name_the_yaml_key(config, key):
    with pytest.raises(ValueError) as err:
        config.validate()
    assert str(err.value).startswith(key)
