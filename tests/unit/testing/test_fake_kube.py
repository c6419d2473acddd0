"""FakeKubeApiServer, driven over real HTTP by the official ``kubernetes`` client, unchanged."""

from __future__ import annotations

import inspect
import json
import threading
import time

import pytest

kubernetes = pytest.importorskip("kubernetes", minversion="30")

import urllib3  # a dependency of kubernetes
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from otel_ebpf.testing.fake_kube import (
    FakeKubeApiServer,
    container_id,
    make_cronjob,
    make_daemonset,
    make_deployment,
    make_destination_rule,
    make_endpoints,
    make_endpointslice,
    make_job,
    make_namespace,
    make_node,
    make_pod,
    make_replicaset,
    make_service,
    make_statefulset,
    make_virtual_service,
    object_uid,
    parse_label_selector,
)

pytestmark = pytest.mark.timeout(30)

WATCH_SAFETY = {"timeout_seconds": 10, "_request_timeout": 15}
"""Bounds for watches a test ends itself (by ``break``), so a bug fails the test instead of hanging it."""


@pytest.fixture
def kube():
    with FakeKubeApiServer(bookmark_interval=0.2) as running:
        yield running


@pytest.fixture
def api(kube):
    with kube.api_client() as api_client:
        yield api_client


@pytest.fixture
def core(api):
    return client.CoreV1Api(api)


def _names(object_list) -> list[str]:
    return [item.metadata.name for item in object_list.items]


def _shop(kube: FakeKubeApiServer) -> None:
    """Four pods on two nodes, with and without a tier label; one Pending."""
    kube.add(make_pod("web-0", "shop", ip="10.1.0.5", node="node-a", labels={"app": "web", "tier": "front"}))
    kube.add(make_pod("web-1", "shop", ip="10.1.1.5", node="node-b", labels={"app": "web", "tier": "front"}))
    kube.add(make_pod("db-0", "shop", ip="10.1.0.6", node="node-a", labels={"app": "db", "tier": "back"}))
    kube.add(make_pod("job-x", "batch", ip=None, node=None, labels={"app": "job"}, phase="Pending",
                      containers=[("main", None)]))


def _raw_get(api, path: str, query: list[tuple[str, object]] = ()) -> urllib3.HTTPResponse:
    """GET ``path`` through ``ApiClient.call_api`` unread, in the form this client version has: up to 36.x
    call_api takes the resource path and ``_preload_content=False``; from 37 (openapi-generator's new python
    client) it takes the full URL from ``param_serialize`` and returns an unread RESTResponse."""
    if "_preload_content" in inspect.signature(api.call_api).parameters:
        return api.call_api(path, "GET", query_params=list(query), auth_settings=["BearerToken"],
                            _preload_content=False, _return_http_data_only=True)
    method, url, headers, body, post_params = api.param_serialize("GET", path, query_params=list(query),
                                                                  auth_settings=["BearerToken"])
    return api.call_api(method, url, headers, body, post_params).response


# -- configuration and discovery ---------------------------------------------------------------------------


def test_a_kubeconfig_written_by_the_server_drives_the_official_client(kube, tmp_path):
    kube.add(make_namespace("shop"))
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kube.kubeconfig(tmp_path / "kubeconfig")),
                            client_configuration=configuration)
    assert configuration.host == kube.url
    with client.ApiClient(configuration) as api_client:
        namespaces = client.CoreV1Api(api_client).list_namespace()
    assert _names(namespaces) == ["shop"]
    assert namespaces.items[0].metadata.labels == {"kubernetes.io/metadata.name": "shop"}


def test_a_request_without_the_bearer_token_gets_a_401_status(kube):
    configuration = client.Configuration()
    configuration.host = kube.url
    with client.ApiClient(configuration) as api_client, pytest.raises(ApiException) as raised:
        client.CoreV1Api(api_client).list_namespace()
    assert raised.value.status == 401
    assert json.loads(raised.value.body)["reason"] == "Unauthorized"


def test_discovery_shows_the_served_groups_and_istio_only_when_enabled(api):
    groups = {g.name for g in client.ApisApi(api).get_api_versions().groups}
    assert groups == {"apps", "batch", "discovery.k8s.io"}
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    core_resources = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    assert set(core_resources) == {"pods", "services", "endpoints", "nodes", "namespaces"}
    assert core_resources["nodes"].namespaced is False and "watch" in core_resources["pods"].verbs
    assert {r.kind for r in client.DiscoveryV1Api(api).get_api_resources().resources} == {"EndpointSlice"}
    with pytest.raises(ApiException) as raised:
        client.CustomObjectsApi(api).list_cluster_custom_object("networking.istio.io", "v1", "virtualservices")
    assert raised.value.status == 404
    status = json.loads(raised.value.body)
    assert (status["kind"], status["status"], status["reason"], status["code"]) == ("Status", "Failure",
                                                                                    "NotFound", 404)


def test_with_istio_the_networking_group_is_discovered_and_served():
    with FakeKubeApiServer(istio=True) as kube, kube.api_client() as api:
        kube.add(make_virtual_service("web", "shop", hosts=["web.shop.svc.cluster.local"]))
        kube.add(make_destination_rule("web", "shop", host="web.shop.svc.cluster.local",
                                       subsets=[{"name": "v1", "labels": {"version": "v1"}}]))
        groups = {g.name: g for g in client.ApisApi(api).get_api_versions().groups}
        assert groups["networking.istio.io"].preferred_version.group_version == "networking.istio.io/v1"
        resources = _raw_get(api, "/apis/networking.istio.io/v1").json()["resources"]
        assert {r["kind"] for r in resources} == {"VirtualService", "DestinationRule"}
        custom = client.CustomObjectsApi(api)
        virtual_services = custom.list_cluster_custom_object("networking.istio.io", "v1", "virtualservices")
        assert virtual_services["kind"] == "VirtualServiceList"
        assert virtual_services["items"][0]["spec"]["hosts"] == ["web.shop.svc.cluster.local"]
        rule = custom.get_namespaced_custom_object("networking.istio.io", "v1", "shop", "destinationrules", "web")
        assert rule["spec"]["subsets"][0]["name"] == "v1"


# -- lists -------------------------------------------------------------------------------------------------


def test_a_pod_list_is_filtered_by_the_spec_node_name_field_selector(kube, core):
    _shop(kube)
    assert _names(core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-a")) == ["db-0", "web-0"]
    assert _names(core.list_pod_for_all_namespaces(field_selector="spec.nodeName==node-b")) == ["web-1"]
    assert _names(core.list_pod_for_all_namespaces(field_selector="spec.nodeName=")) == ["job-x"]
    assert _names(core.list_pod_for_all_namespaces(field_selector="status.phase!=Running")) == ["job-x"]
    assert _names(core.list_namespaced_pod("shop", field_selector="metadata.name=web-1,spec.nodeName=node-b")) \
        == ["web-1"]
    with pytest.raises(ApiException) as raised:
        core.list_pod_for_all_namespaces(field_selector="spec.image=nginx")
    assert raised.value.status == 400
    assert json.loads(raised.value.body)["message"] == "field label not supported: spec.image"


@pytest.mark.parametrize(("selector", "expected"), [
    ("app=web", ["web-0", "web-1"]),
    ("app==db", ["db-0"]),
    ("app!=web", ["job-x", "db-0"]),
    ("tier in (front, back)", ["db-0", "web-0", "web-1"]),
    ("tier notin (front)", ["job-x", "db-0"]),
    ("tier", ["db-0", "web-0", "web-1"]),
    ("!tier", ["job-x"]),
    ("app=web,tier=front", ["web-0", "web-1"]),
    ("app in (web,db),tier!=front", ["db-0"]),
])
def test_a_pod_list_is_filtered_by_label_selectors(kube, core, selector, expected):
    _shop(kube)
    assert _names(core.list_pod_for_all_namespaces(label_selector=selector)) == expected


def test_a_malformed_label_selector_gets_a_400_status(kube, core):
    with pytest.raises(ApiException) as raised:
        core.list_pod_for_all_namespaces(label_selector="app in web")
    assert raised.value.status == 400
    assert json.loads(raised.value.body)["reason"] == "BadRequest"


def test_label_selector_parsing_keeps_commas_inside_sets():
    requirements = parse_label_selector(" app in (a,b) , !canary,tier!=x,version>2 ")
    assert [(r.key, r.op, r.values) for r in requirements] == [
        ("app", "in", ("a", "b")), ("canary", "!", ()), ("tier", "!=", ("x",)), ("version", ">", ("2",))]


def test_list_items_carry_no_kind_or_api_version_like_a_real_server(kube, core):
    _shop(kube)
    response = core.list_namespaced_pod("shop", _preload_content=False)
    document = json.loads(response.data)
    assert (document["kind"], document["apiVersion"]) == ("PodList", "v1")
    assert document["metadata"] == {"resourceVersion": str(kube.resource_version)}
    assert [item["metadata"]["name"] for item in document["items"]] == ["db-0", "web-0", "web-1"]  # key order
    assert not any("kind" in item or "apiVersion" in item for item in document["items"])
    assert core.read_namespaced_pod("web-0", "shop").kind == "Pod"  # a single object does carry them


def test_a_chunked_list_walks_a_consistent_snapshot_through_continue(kube, core):
    for i in range(7):
        kube.add(make_pod(f"p{i}", "shop", ip=f"10.1.0.{i + 10}", node="node-a"))
    first = core.list_namespaced_pod("shop", limit=3)
    assert _names(first) == ["p0", "p1", "p2"]
    assert first.metadata.remaining_item_count == 4
    kube.delete("Pod", "shop", "p5")  # after the first page: invisible to the rest of this list
    kube.add(make_pod("p9", "shop", ip="10.1.0.99", node="node-a"))
    pages, token = [first], first.metadata._continue
    while token:
        pages.append(core.list_namespaced_pod("shop", limit=3, _continue=token))
        token = pages[-1].metadata._continue
    assert [_names(p) for p in pages] == [["p0", "p1", "p2"], ["p3", "p4", "p5"], ["p6"]]
    assert {p.metadata.resource_version for p in pages} == {first.metadata.resource_version}
    assert _names(core.list_namespaced_pod("shop")) == ["p0", "p1", "p2", "p3", "p4", "p6", "p9"]


def test_a_continue_token_older_than_the_compaction_gets_410_expired(kube, core):
    for i in range(4):
        kube.add(make_pod(f"p{i}", "shop", ip=f"10.1.0.{i + 10}", node="node-a"))
    first = core.list_namespaced_pod("shop", limit=2)
    kube.add(make_pod("late", "shop", ip="10.1.0.99", node="node-a"))
    kube.compact()
    with pytest.raises(ApiException) as raised:
        core.list_namespaced_pod("shop", limit=2, _continue=first.metadata._continue)
    assert raised.value.status == 410
    status = json.loads(raised.value.body)
    assert status["reason"] == "Expired" and status["metadata"]["continue"]
    rest = core.list_namespaced_pod("shop", _continue=status["metadata"]["continue"])  # inconsistent remainder
    assert _names(rest) == ["p2", "p3"]


def test_an_exact_list_serves_the_past_until_it_is_compacted(kube, core):
    kube.add(make_pod("a", "shop", ip="10.1.0.1", node="node-a"))
    then = str(kube.resource_version)
    kube.add(make_pod("b", "shop", ip="10.1.0.2", node="node-a"))
    past = core.list_namespaced_pod("shop", resource_version=then, resource_version_match="Exact")
    assert _names(past) == ["a"] and past.metadata.resource_version == then
    kube.compact()
    with pytest.raises(ApiException) as raised:
        core.list_namespaced_pod("shop", resource_version=then, resource_version_match="Exact")
    assert raised.value.status == 410


def test_get_returns_one_object_or_a_not_found_status(kube, api, core):
    kube.add(make_node("node-a", internal_ip="192.168.0.10"))
    kube.add(make_deployment("web", "shop"))
    assert core.read_node("node-a").status.addresses[0].address == "192.168.0.10"
    assert client.AppsV1Api(api).read_namespaced_deployment("web", "shop").metadata.uid == \
        object_uid("Deployment", "shop", "web")
    with pytest.raises(ApiException) as raised:
        client.AppsV1Api(api).read_namespaced_deployment("api", "shop")
    assert raised.value.status == 404
    assert json.loads(raised.value.body)["message"] == 'deployments.apps "api" not found'


def test_raw_call_api_returns_the_json_bytes(kube, api):
    _shop(kube)
    response = _raw_get(api, "/api/v1/namespaces/shop/pods", [("labelSelector", "app=web")])
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    document = json.loads(response.data)
    assert document["kind"] == "PodList"
    assert [item["metadata"]["name"] for item in document["items"]] == ["web-0", "web-1"]


# -- watches -----------------------------------------------------------------------------------------------


def _mutate_when_watched(kube: FakeKubeApiServer, change) -> threading.Thread:
    """Run ``change()`` once a watch is open (so the events travel live, not as replay)."""
    def run() -> None:
        kube.wait_for_watches(1)
        change()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _add_modify_delete(kube: FakeKubeApiServer) -> None:
    added = kube.add(make_pod("c", "shop", ip="10.1.0.7", node="node-a", labels={"app": "web"}))
    added["metadata"]["labels"]["version"] = "2"
    kube.modify(added)
    kube.delete("Pod", "shop", "c")


def test_a_watch_from_a_list_resource_version_streams_added_modified_deleted_in_order(kube, core):
    _shop(kube)
    listed = core.list_pod_for_all_namespaces()
    kube.add(make_pod("before-watch", "shop", ip="10.1.0.8", node="node-a"))  # replayed from the history
    _mutate_when_watched(kube, lambda: _add_modify_delete(kube))
    seen = []
    for event in watch.Watch().stream(core.list_pod_for_all_namespaces,
                                      resource_version=listed.metadata.resource_version, **WATCH_SAFETY):
        seen.append((event["type"], event["object"].metadata.name, int(event["object"].metadata.resource_version)))
        if event["type"] == "DELETED":
            break
    assert [(t, n) for t, n, _ in seen] == [("ADDED", "before-watch"), ("ADDED", "c"), ("MODIFIED", "c"),
                                            ("DELETED", "c")]
    versions = [rv for _, _, rv in seen]
    assert versions == sorted(versions) and versions[-1] == kube.resource_version
    assert kube.get("Pod", "shop", "c") is None


def test_a_watch_without_resource_version_opens_with_an_added_event_per_object(kube, core):
    _shop(kube)
    seen = []
    for event in watch.Watch().stream(core.list_namespaced_pod, "shop", **WATCH_SAFETY):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            break
    assert seen == [("ADDED", "db-0"), ("ADDED", "web-0"), ("ADDED", "web-1")]


def test_a_watch_with_a_selector_sees_an_object_leave_it_as_deleted(kube, core):
    pod = kube.add(make_pod("web-0", "shop", ip="10.1.0.5", node="node-a", labels={"app": "web"}))
    start = str(kube.resource_version)

    def relabel() -> None:
        pod["metadata"]["labels"] = {"app": "other"}
        kube.modify(pod)
        pod["metadata"]["labels"] = {"app": "web"}
        kube.modify(pod)

    _mutate_when_watched(kube, relabel)
    seen = []
    for event in watch.Watch().stream(core.list_pod_for_all_namespaces, label_selector="app=web",
                                      resource_version=start, **WATCH_SAFETY):
        seen.append((event["type"], event["object"].metadata.labels["app"]))
        if len(seen) == 2:
            break
    assert seen == [("DELETED", "web"), ("ADDED", "web")]


def test_bookmarks_arrive_only_when_allowed(kube, core):
    kube.add(make_pod("web-0", "shop", ip="10.1.0.5", node="node-a"))
    start = str(kube.resource_version)
    stream = watch.Watch()
    bookmarks = []
    for event in stream.stream(core.list_pod_for_all_namespaces, resource_version=start,
                               allow_watch_bookmarks=True, **WATCH_SAFETY):
        assert event["type"] == "BOOKMARK"
        bookmarks.append(event["raw_object"])
        if len(bookmarks) == 2:
            break
    assert bookmarks[0] == {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": start}}
    assert stream.resource_version == start  # the client keeps a bookmark's resourceVersion to resume from

    events = list(watch.Watch().stream(core.list_pod_for_all_namespaces, resource_version=start,
                                       timeout_seconds=1))
    assert events == []  # 1 s at a 0.2 s bookmark interval, but bookmarks were not asked for


def test_send_bookmarks_forces_one_now():
    with FakeKubeApiServer(bookmark_interval=60) as kube, kube.api_client() as api:
        core = client.CoreV1Api(api)
        _mutate_when_watched(kube, kube.send_bookmarks)
        started = time.monotonic()
        event = next(watch.Watch().stream(core.list_service_for_all_namespaces, resource_version="100",
                                          allow_watch_bookmarks=True, **WATCH_SAFETY))
        assert event["type"] == "BOOKMARK" and time.monotonic() - started < 5


def test_timeout_seconds_ends_the_stream_cleanly(kube, core):
    kube.add(make_pod("web-0", "shop", ip="10.1.0.5", node="node-a"))
    started = time.monotonic()
    events = list(watch.Watch().stream(core.list_pod_for_all_namespaces,
                                       resource_version=str(kube.resource_version), timeout_seconds=1))
    assert events == []
    assert 0.9 <= time.monotonic() - started < 5
    assert kube.active_watches() == 0


def test_a_watch_from_a_compacted_resource_version_gets_an_error_event_with_410(kube, api, core):
    kube.add(make_pod("web-0", "shop", ip="10.1.0.5", node="node-a"))
    old = str(kube.resource_version)
    kube.add(make_pod("web-1", "shop", ip="10.1.0.6", node="node-a"))
    kube.compact()

    # On the wire: HTTP 200, then one ERROR event holding a Status, then the end of the stream.
    raw = client.CoreV1Api(api).list_pod_for_all_namespaces(watch=True, resource_version=old,
                                                             _preload_content=False)
    assert raw.status == 200
    lines = raw.data.splitlines()
    assert [json.loads(line) for line in lines] == [{"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Expired",
        "code": 410, "message": f"too old resource version: {old} ({kube.resource_version})"}}]

    # The client turns it into ApiException(410); with timeout_seconds it does so at once ...
    kube.clear_request_log()
    with pytest.raises(ApiException) as raised:
        list(watch.Watch().stream(core.list_pod_for_all_namespaces, resource_version=old, timeout_seconds=5))
    assert raised.value.status == 410 and raised.value.reason.startswith("Expired: too old resource version")
    assert sum(r.watch for r in kube.request_log) == 1
    # ... without, it first retries once from the same resourceVersion.
    kube.clear_request_log()
    with pytest.raises(ApiException) as raised:
        list(watch.Watch().stream(core.list_pod_for_all_namespaces, resource_version=old))
    assert raised.value.status == 410
    assert [r.query["resourceVersion"] for r in kube.request_log if r.watch] == [old, old]


def test_drop_watches_breaks_the_stream_under_the_client(kube, core):
    kube.add(make_pod("web-0", "shop", ip="10.1.0.5", node="node-a"))
    dropped = []
    dropper = _mutate_when_watched(kube, lambda: dropped.append(kube.drop_watches()))
    with pytest.raises(urllib3.exceptions.ProtocolError):  # "Response ended prematurely"
        list(watch.Watch().stream(core.list_pod_for_all_namespaces, resource_version=str(kube.resource_version)))
    dropper.join(5)
    assert dropped == [1]
    assert kube.active_watches() == 0


def test_after_a_graceful_end_the_client_rewatches_from_its_last_resource_version(kube, core):
    kube.add(make_pod("web-0", "shop", ip="10.1.0.5", node="node-a"))
    start = str(kube.resource_version)

    def end_then_change() -> None:
        kube.add(make_pod("web-1", "shop", ip="10.1.0.6", node="node-a"))
        time.sleep(0.2)  # let it be delivered on the first connection
        kube.drop_watches(graceful=True)
        kube.add(make_pod("web-2", "shop", ip="10.1.0.7", node="node-a"))

    _mutate_when_watched(kube, end_then_change)
    seen = []
    for event in watch.Watch().stream(core.list_pod_for_all_namespaces, resource_version=start):
        seen.append(event["object"].metadata.name)
        if len(seen) == 2:
            break
    assert seen == ["web-1", "web-2"]
    watches = [r.query.get("resourceVersion") for r in kube.request_log if r.watch]
    assert watches == [start, str(int(start) + 1)]  # no relist: resumed after web-1


def test_closing_the_response_ends_the_watch_on_the_server(kube, core):
    response = core.list_pod_for_all_namespaces(watch=True, _preload_content=False)
    kube.wait_for_watches(1, kind="Pod")
    response.close()
    deadline = time.monotonic() + 5
    while kube.active_watches() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert kube.active_watches() == 0


def test_send_initial_events_ends_the_initial_state_with_an_annotated_bookmark(kube, api):
    _shop(kube)
    response = _raw_get(api, "/api/v1/namespaces/shop/pods", [
        ("watch", "true"), ("sendInitialEvents", "true"), ("allowWatchBookmarks", "true"),
        ("resourceVersionMatch", "NotOlderThan"), ("timeoutSeconds", 1)])
    events = [json.loads(line) for line in response.data.splitlines()]
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events[:4]] == [
        ("ADDED", "db-0"), ("ADDED", "web-0"), ("ADDED", "web-1"), ("BOOKMARK", None)]
    assert events[3]["object"]["metadata"] == {"resourceVersion": str(kube.resource_version),
                                               "annotations": {"k8s.io/initial-events-end": "true"}}


def test_stop_ends_open_watches(core):
    kube = FakeKubeApiServer().start()
    core.api_client.configuration.host = kube.url
    response = core.list_pod_for_all_namespaces(watch=True, _preload_content=False)
    kube.wait_for_watches(1)
    kube.stop()
    kube.stop()
    assert kube.active_watches() == 0
    with pytest.raises(urllib3.exceptions.ProtocolError):
        response.read()


# -- test controls -----------------------------------------------------------------------------------------


def test_fail_next_answers_with_a_status_then_serves_again(kube, core):
    kube.fail_next(2, status=503, path="/api/v1/pods")
    for _ in range(2):
        with pytest.raises(ApiException) as raised:
            core.list_pod_for_all_namespaces()
        assert raised.value.status == 503
        assert json.loads(raised.value.body)["reason"] == "ServiceUnavailable"
    core.list_namespace()  # another path is not failed
    assert core.list_pod_for_all_namespaces().items == []


def test_the_request_log_counts_lists_and_watches_per_resource(kube, api, core):
    core.list_pod_for_all_namespaces(limit=10)
    client.AppsV1Api(api).list_namespaced_replica_set("shop")
    list(watch.Watch().stream(core.list_pod_for_all_namespaces, timeout_seconds=1))
    log = kube.request_log
    assert [(r.method, r.path, r.watch) for r in log] == [
        ("GET", "/api/v1/pods", False), ("GET", "/apis/apps/v1/namespaces/shop/replicasets", False),
        ("GET", "/api/v1/pods", True)]
    assert log[0].query == {"limit": "10"}
    method, path, query = log[2]  # a plain (method, path, query) tuple too
    assert (method, path, query["timeoutSeconds"]) == ("GET", "/api/v1/pods", "1")


# -- the store and the builders ----------------------------------------------------------------------------


def test_add_fills_server_metadata_and_refuses_a_duplicate(kube):
    stored = kube.add({"kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
                       "spec": {"ports": [{"port": 80}]}})
    assert stored["apiVersion"] == "v1"
    assert stored["metadata"]["resourceVersion"] == "101" and stored["metadata"]["uid"]
    assert stored["metadata"]["creationTimestamp"].endswith("Z")
    with pytest.raises(ValueError):
        kube.add(stored)
    modified = kube.modify({**stored, "spec": {"ports": [{"port": 81}]}})
    assert modified["metadata"]["resourceVersion"] == "102"
    assert modified["metadata"]["uid"] == stored["metadata"]["uid"]
    deleted = kube.delete("Service", "shop", "web")
    assert deleted["metadata"]["resourceVersion"] == "103" and kube.get("Service", "shop", "web") is None
    with pytest.raises(KeyError):
        kube.modify(stored)
    with pytest.raises(ValueError, match="istio=True"):
        kube.add(make_virtual_service("web", "shop", hosts=["web"]))


def test_builders_give_objects_the_client_reads_into_its_models(kube, api):
    """Real API shape: every builder's object, read back through the typed API, validates as the client's
    model (which insists on the fields the API marks required)."""
    core, apps, batch = client.CoreV1Api(api), client.AppsV1Api(api), client.BatchV1Api(api)
    rs = make_replicaset("web-5d4f", "shop", owner_deployment="web")
    pod = make_pod("web-5d4f-a", "shop", ip="10.1.0.5", node="node-a", owner=rs, extra_ips=["fd00::5"],
                   init_containers=[("init", container_id("shop", "web-5d4f-a", "init"))])
    cases = [
        (pod, core.read_namespaced_pod),
        (make_pod("pending", "shop", ip=None, node=None, phase="Pending", containers=[("app", None)]),
         core.read_namespaced_pod),
        (make_service("web", "shop", cluster_ip="10.96.0.10", selector={"app": "web"}, ports=[80, 443]),
         core.read_namespaced_service),
        (make_endpointslice("web-abc", "shop", service="web", addresses=["10.1.0.5"], pod_names=["web-5d4f-a"],
                            node_names=["node-a"]), client.DiscoveryV1Api(api).read_namespaced_endpoint_slice),
        (make_endpoints("web", "shop", addresses=["10.1.0.5"], pod_names=["web-5d4f-a"]),
         core.read_namespaced_endpoints),
        (make_deployment("web", "shop"), apps.read_namespaced_deployment),
        (rs, apps.read_namespaced_replica_set),
        (make_statefulset("db", "shop"), apps.read_namespaced_stateful_set),
        (make_daemonset("agent", "shop"), apps.read_namespaced_daemon_set),
        (make_job("nightly-1", "shop", owner_cronjob="nightly"), batch.read_namespaced_job),
        (make_cronjob("nightly", "shop"), batch.read_namespaced_cron_job),
    ]
    for obj, read in cases:
        kube.add(obj)
        assert read(obj["metadata"]["name"], "shop").metadata.uid == obj["metadata"]["uid"]
    kube.add(make_node("node-a", internal_ip="192.168.0.10", pod_cidr="10.1.0.0/24"))
    assert core.read_node("node-a").spec.pod_cidr == "10.1.0.0/24"
    kube.add(make_namespace("shop"))
    assert core.read_namespace("shop").status.phase == "Active"

    assert pod["status"]["podIP"] == "10.1.0.5"
    assert pod["status"]["podIPs"] == [{"ip": "10.1.0.5"}, {"ip": "fd00::5"}]
    assert pod["status"]["containerStatuses"][0]["containerID"] == container_id("shop", "web-5d4f-a")
    assert len(container_id("shop", "web-5d4f-a")) == len("containerd://") + 64
    assert pod["metadata"]["ownerReferences"][0]["uid"] == object_uid("ReplicaSet", "shop", "web-5d4f")
    assert rs["metadata"]["ownerReferences"][0]["uid"] == make_deployment("web", "shop")["metadata"]["uid"]
