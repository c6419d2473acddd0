from __future__ import annotations

import pytest

from otel_ebpf.processors.routes import RoutesConfig, RoutesProcessor, guess_template, target_path

from ..factories import make_exchange


def _process(target, patterns=(), **config):
    return RoutesProcessor(RoutesConfig(patterns=list(patterns), **config)).process(make_exchange(target=target))


def test_a_matching_pattern_becomes_the_route_and_the_template():
    ex = _process("/users/42?x=1", ["/users/{id}"])
    assert ex.route == "/users/{id}"
    assert ex.url_template == "/users/{id}"


def test_placeholders_match_exactly_one_non_empty_segment():
    processor = RoutesProcessor(RoutesConfig(patterns=["/api/v1/items/{item_id}/tags"]))
    assert processor.lookup("/api/v1/items/9/tags")[0] == "/api/v1/items/{item_id}/tags"
    assert processor.lookup("/api/v1/items//tags")[0] is None
    assert processor.lookup("/api/v1/items/9/8/tags")[0] is None


def test_a_trailing_star_matches_the_rest_of_the_path_but_not_the_prefix_alone():
    processor = RoutesProcessor(RoutesConfig(patterns=["/static/*"]))
    assert processor.lookup("/static/css/site.css")[0] == "/static/*"
    assert processor.lookup("/static/a")[0] == "/static/*"
    assert processor.lookup("/static")[0] is None


def test_a_star_in_the_middle_matches_one_segment():
    processor = RoutesProcessor(RoutesConfig(patterns=["/a/*/c"]))
    assert processor.lookup("/a/b/c")[0] == "/a/*/c"
    assert processor.lookup("/a/b/b/c")[0] is None


def test_literal_patterns_win_over_placeholders_whatever_the_order():
    processor = RoutesProcessor(RoutesConfig(patterns=["/users/{id}", "/users/me"]))
    assert processor.lookup("/users/me")[0] == "/users/me"
    assert processor.lookup("/users/7")[0] == "/users/{id}"


def test_among_patterns_with_placeholders_the_first_listed_wins():
    processor = RoutesProcessor(RoutesConfig(patterns=["/x/{a}/y", "/x/*"]))
    assert processor.lookup("/x/1/y")[0] == "/x/{a}/y"
    assert processor.lookup("/x/1/z")[0] == "/x/*"


def test_one_trailing_slash_is_ignored_when_matching():
    assert _process("/users/42/", ["/users/{id}"]).route == "/users/{id}"


def test_without_a_match_there_is_no_route_but_a_guessed_template():
    ex = _process("/orders/12345/items/7", ["/users/{id}"])
    assert ex.route is None
    assert ex.url_template == "/orders/{id}/items/{id}"


def test_template_guessing_can_be_turned_off():
    ex = _process("/orders/1", guess_templates=False)
    assert ex.route is None and ex.url_template is None


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/", "/"),
        ("/users/42", "/users/{id}"),
        ("/u/123e4567-e89b-12d3-a456-426614174000", "/u/{id}"),
        ("/u/{123E4567-E89B-12D3-A456-426614174000}", "/u/{id}"),
        ("/commits/5f2b9c0e1a", "/commits/{id}"),
        ("/objects/507f1f77bcf86cd799439011", "/objects/{id}"),
        ("/invoices/INV-20240115", "/invoices/{id}"),
        ("/people/bob@example.com/x", "/people/*/x"),
        ("/people/bob%40example.com", "/people/*"),
        ("/t/eyJhbGciOiJIUzI1NiJ9", "/t/*"),
        ("/f/" + "a" * 70, "/f/*"),
        ("/api/v1/users", "/api/v1/users"),
        ("/api/v2/sha256/ipv6", "/api/v2/sha256/ipv6"),
        ("/reset-password/confirm", "/reset-password/confirm"),
        ("/deadbeef/facade", "/deadbeef/facade"),
        ("/a//b/", "/a//b/"),
        ("*", "*"),
    ],
)
def test_the_template_guessing_rules(path, template):
    assert guess_template(path) == template


def test_very_deep_paths_are_cut():
    template = guess_template("/a" * 50)
    assert template.count("/") == 33
    assert template.endswith("/*")


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/a/b?c=d#e", "/a/b"),
        ("/a#frag", "/a"),
        ("http://h.example:8080/x/y?z=1", "/x/y"),
        ("https://h.example", "/"),
        ("http://h.example?q=1", "/"),
        ("*", "*"),
        ("h.example:443", None),
        ("", None),
    ],
)
def test_the_path_of_every_request_target_form(target, path):
    assert target_path(target) == path


def test_an_absolute_form_target_is_matched_on_its_path():
    assert _process("http://h.example/users/1", ["/users/{id}"]).route == "/users/{id}"


def test_connect_targets_get_no_template_and_the_exchange_is_unchanged():
    ex = make_exchange(method="CONNECT", target="h.example:443")
    assert RoutesProcessor().process(ex) is ex


def test_the_path_cache_is_bounded_and_counts_evictions():
    processor = RoutesProcessor(RoutesConfig(cache_size=3))
    for i in range(10):
        processor.lookup(f"/n/{i}")
    assert len(processor._cache) == 3
    assert processor.cache_evictions == 7


def test_the_default_config_is_valid():
    RoutesConfig.create_default_config().validate()


@pytest.mark.parametrize(
    "pattern",
    ["users/{id}", "/users/{id", "/users/x{id}", "/a/{id}/{id}", "/a/b*", "/a//b", "/a?x=1", 5],
)
def test_bad_patterns_are_rejected_naming_the_yaml_key(pattern):
    with pytest.raises(ValueError) as err:
        RoutesConfig(patterns=[pattern]).validate()
    assert str(err.value).startswith("routes.patterns:")


def test_duplicate_patterns_and_bad_cache_sizes_are_rejected():
    with pytest.raises(ValueError, match=r"^routes.patterns:"):
        RoutesConfig(patterns=["/a", "/a"]).validate()
    with pytest.raises(ValueError, match=r"^routes.cache_size:"):
        RoutesConfig(cache_size=0).validate()


def test_a_route_or_template_set_by_an_earlier_stage_is_kept_when_nothing_configured_matches():
    processor = RoutesProcessor(RoutesConfig(patterns=["/users/{id}"]))
    ex = processor.process(make_exchange(target="/rpc/Greeter/SayHello", route="/Greeter/SayHello"))
    assert (ex.route, ex.url_template) == ("/Greeter/SayHello", "/Greeter/SayHello")
    ex = processor.process(make_exchange(target="/x/1", url_template="/x/{n}"))
    assert (ex.route, ex.url_template) == (None, "/x/{n}")
    ex = processor.process(make_exchange(target="/users/1", route="/old", url_template="/old"))
    assert (ex.route, ex.url_template) == ("/users/{id}", "/users/{id}")
