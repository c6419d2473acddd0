"""The DaemonSet example: its RBAC grants exactly what the metadata cache uses, and its config loads."""

from __future__ import annotations

from pathlib import Path

import yaml

from otel_ebpf.kube.metadata import RESOURCES
from otel_ebpf.service.config import ServiceConfig

MANIFEST = Path(__file__).resolve().parents[3] / "examples" / "kubernetes" / "daemonset.yaml"
VERBS_USED = {"list", "watch"}  # informers list then watch; nothing is read one by one or written


def _documents() -> list[dict]:
    return list(yaml.safe_load_all(MANIFEST.read_text()))


def _group_and_plural(path: str) -> tuple[str, str]:
    parts = path.strip("/").split("/")
    return ("", parts[-1]) if parts[0] == "api" else (parts[1], parts[-1])


def test_the_cluster_role_grants_exactly_list_and_watch_on_exactly_the_resources_watched():
    (role,) = [d for d in _documents() if d["kind"] == "ClusterRole"]
    granted: set[tuple[str, str, str]] = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    granted.add((group, resource, verb))
    used = {(*_group_and_plural(spec.path), verb) for spec in RESOURCES for verb in VERBS_USED}
    assert granted == used


def test_the_daemonset_runs_the_agent_with_its_node_name_and_a_config_that_loads():
    docs = _documents()
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    cfg = ServiceConfig.from_yaml(config_map["data"]["config.yaml"])
    assert {"kubernetes", "servicegraph"} <= set(cfg.processors)
    (daemonset,) = [d for d in docs if d["kind"] == "DaemonSet"]
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostPID"] is True and pod["serviceAccountName"] == "otel-ebpf"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["K8S_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
