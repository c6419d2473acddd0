"""pid -> container -> pod from cgroups: every layout in tests/fixtures/cgroup, the resolver over a fake
/proc, this machine's own /proc/self/cgroup, and kubelet-shaped cgroups made for real on this machine."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from otel_ebpf.kube.cgroup import (
    ContainerRef,
    ContainerResolver,
    cgroup_v2_mount,
    container_from_cgroup_path,
    container_from_proc_cgroup,
    make_pod_cgroup,
    move_pid,
    parse_proc_cgroup,
    remove_cgroup,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "cgroup"

ID_A = "938df91475451b2ed14df1b10c12ee7d4d6adc907f50713cc3f39cfd9953a1de"
ID_B = "3288dbfacafc36cdc55534fd6e37ad691dfcf7ea41ea999299bc6e29e8be0ca3"
UID = "1b2c3d4e-5f6a-7b8c-9d0e-1f2a3b4c5d6e"
UID_ = UID.replace("-", "_")

# fixture file -> what its process resolves to (README.md there says where each layout comes from)
EXPECTED: dict[str, ContainerRef | None] = {
    "containerd-systemd-v2.txt": ContainerRef(
        "containerd", "938df91475451b2ed14df1b10c12ee7d4d6adc907f50713cc3f39cfd9953a1de", UID, "burstable"
    ),
    "containerd-systemd-v2-guaranteed.txt": ContainerRef(
        "containerd",
        "3288dbfacafc36cdc55534fd6e37ad691dfcf7ea41ea999299bc6e29e8be0ca3",
        "ca603a13-1cae-440f-b6ab-146cf276ac5a",
        "guaranteed",
    ),
    "containerd-systemd-v1.txt": ContainerRef(
        "containerd",
        "7314187bf1d865fadbbe4122beefaf440ed8c1733d85f680a8404aa00e6b5db1",
        "a74cdef1-3b11-4588-bb4d-2e0d51a30d63",
        "besteffort",
    ),
    "crio-systemd-v2.txt": ContainerRef(
        "cri-o",
        "aeee236da5800646f93774dce3870a60b8dea35eb39849f9884316f96bf4e5c9",
        "9308bbf9-e41c-4812-99ad-cc281530ff93",
        "besteffort",
    ),
    "crio-crun-subgroup-v2.txt": ContainerRef(
        "cri-o",
        "d48188525456a452099b7261fac56360f427ab30cf2b26685c4d6f793ec48c9c",
        "8c68962e-0648-4c97-8632-cad6c4e9cd3b",
        "burstable",
    ),
    "crio-conmon-v2.txt": None,
    "crio-cgroupfs-v1.txt": ContainerRef(
        "cri-o",
        "ef4373df5ee04e73ed28b67995e4cd967dcd07e0cd0709d38c0bcbdca020a7bb",
        "78523454-ab9f-4567-87b6-7c6ade367979",
        "burstable",
    ),
    "docker-systemd-v1.txt": ContainerRef(
        "docker",
        "0376fb66425d9e90b54477cead66bd9d7a808ca2b82aff013e8231ab170672ad",
        "053f96f9-181d-4f3f-b5a7-81a709111d77",
        "guaranteed",
    ),
    "docker-cgroupfs-v1.txt": ContainerRef(
        "unknown",
        "d326eb031deb7146be76a10495488656afc1fba58712594f18bcabb99d6bf571",
        "7e3c9631-7317-4964-b6d7-ec2ee23fc4ef",
        "burstable",
    ),
    "cgroupfs-v2-besteffort.txt": ContainerRef(
        "unknown",
        "41a4eb679451a1c41f1d711789733ee6b452a2b7cf22263473d1c5752d6927d0",
        "8ee8c734-6d4e-4a61-89e6-1009cc6ed3ce",
        "besteffort",
    ),
    "k3d-host-view.txt": ContainerRef(
        "unknown",
        "9a5bf19b8e32ad2bf7680cc6b887fb29909607e609fbc47e9f42f343362d9251",
        "26d96a66-bcf7-431c-bf51-8cadaeb58227",
        "guaranteed",
    ),
    "kind-nested.txt": ContainerRef(
        "containerd",
        "e53a3d73c78c5b62338c4af91025ba1491120abce4ec1f551a18a9d5a1ce4a85",
        "7322f617-3abc-41a3-87ec-1868e2c6cf22",
        "besteffort",
    ),
    "kind-nested-host-view.txt": ContainerRef(
        "containerd",
        "e53a3d73c78c5b62338c4af91025ba1491120abce4ec1f551a18a9d5a1ce4a85",
        "7322f617-3abc-41a3-87ec-1868e2c6cf22",
        "besteffort",
    ),
    "kind-node-host-view.txt": ContainerRef(
        "docker", "0778728045aeed12fea192a962882a083f33a4666c6f30f5bb104a49c52241c1"
    ),
    "kubeadm-static-pod-v2.txt": ContainerRef(
        "containerd",
        "4b20b2b31ad7b27f95b2e2ad04706e7a926c47748fb6b9731bd9133f827fab0a",
        "3d8f1c0e9b7a65d4c3b2a1f0e9d8c7b6",
        "burstable",
    ),
    "docker-plain.txt": ContainerRef("docker", "5c1f7e0a9b3d2c4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e"),
    "hybrid-v1-v2.txt": ContainerRef("docker", "b7e0c3d41f5a6e2b9c8d7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d"),
    "docker-in-docker-v1.txt": ContainerRef(
        "docker", "1f2e3d4c5b6a79880716253443526170819203a4b5c6d7e8f9a0b1c2d3e4f5a6"
    ),
    "podman-rootless-v2.txt": ContainerRef(
        "unknown", "c0ffee00d15ea5e5bada55c0de0ddba11cafef00dfacade0123456789abcdef0"
    ),
    "host-process.txt": None,
    "host-init.txt": None,
    "host-root.txt": None,
    "host-service-v1.txt": None,
    "host-hybrid-sandbox.txt": None,
}


def read_fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


# --- fixtures: one real layout per file ------------------------------------------------------------


def test_every_fixture_file_has_an_expected_result_and_every_expectation_a_file():
    assert sorted(p.name for p in FIXTURES.glob("*.txt")) == sorted(EXPECTED)
    readme = (FIXTURES / "README.md").read_text(encoding="utf-8")
    assert [name for name in EXPECTED if f"`{name}`" not in readme] == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_fixture_resolves_to_its_expected_container(name):
    assert container_from_proc_cgroup(read_fixture(name)) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_fixture_parses_the_same_without_its_last_newline_and_with_trailing_blank_lines(name):
    text = read_fixture(name)
    entries = parse_proc_cgroup(text)
    assert len(entries) == len(text.splitlines())
    assert all(path.startswith("/") for _, _, path in entries)
    assert parse_proc_cgroup(text.rstrip("\n")) == entries
    assert parse_proc_cgroup(text + "\n\n") == entries


# --- parse_proc_cgroup -----------------------------------------------------------------------------


def test_a_v1_listing_gives_one_entry_per_hierarchy_with_its_controllers_as_written():
    entries = parse_proc_cgroup(read_fixture("docker-cgroupfs-v1.txt"))
    assert len(entries) == 12
    assert entries[0] == (12, "rdma", "/")
    assert [c for _, c, _ in entries if "cpu" in c.split(",")] == ["cpu,cpuacct"]
    assert entries[-1][:2] == (1, "name=systemd")


def test_a_v2_listing_is_a_single_entry_with_no_controllers():
    assert parse_proc_cgroup("0::/init.scope\n") == [(0, "", "/init.scope")]


def test_a_hybrid_listing_holds_the_v1_hierarchies_and_the_v2_line():
    entries = parse_proc_cgroup(read_fixture("hybrid-v1-v2.txt"))
    assert entries[-1] == (0, "", "/system.slice/containerd.service")
    assert {c for _, c, _ in entries[:-1]} >= {"name=systemd", "memory", "cpu,cpuacct"}


def test_a_path_containing_colons_is_kept_whole():
    assert parse_proc_cgroup("0::/a:b/c:d\n") == [(0, "", "/a:b/c:d")]


@pytest.mark.parametrize("line", ["garbage", "x:cpu:/", "1:cpu", "1:cpu:relative/path", ":cpu:/"])
def test_a_line_that_is_not_id_controllers_path_is_an_error(line):
    with pytest.raises(ValueError, match="line 2"):
        parse_proc_cgroup(f"0::/\n{line}\n")


# --- container_from_cgroup_path ---------------------------------------------------------------------

PATHS: list[tuple[str, ContainerRef | None]] = [
    # the kubelet's own layouts
    (
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID_A}.scope",
        ContainerRef("containerd", ID_A, UID, "burstable"),
    ),
    (f"/kubepods/burstable/pod{UID}/{ID_A}", ContainerRef("unknown", ID_A, UID, "burstable")),
    (f"/kubepods/besteffort/pod{UID}/{ID_A}", ContainerRef("unknown", ID_A, UID, "besteffort")),
    (f"/kubepods/pod{UID}/{ID_A}", ContainerRef("unknown", ID_A, UID, "guaranteed")),
    (f"/kubepods/pod{UID}/crio-{ID_A}", ContainerRef("cri-o", ID_A, UID, "guaranteed")),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/docker-{ID_A}.scope", ContainerRef("docker", ID_A, UID, "guaranteed")),
    # below the container level: crun's sub-cgroup, systemd in the container, a nested runtime
    (f"/kubepods/pod{UID}/{ID_A}/init.scope", ContainerRef("unknown", ID_A, UID, "guaranteed")),
    (f"/kubepods/pod{UID}/{ID_A}/docker/{ID_B}", ContainerRef("unknown", ID_A, UID, "guaranteed")),
    # in a pod, but not in a container of it
    (f"/kubepods/burstable/pod{UID}", None),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice", None),
    (f"/kubepods/burstable/pod{UID}/not-a-container", None),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID_A}.scope", None),
    (f"/kubepods/burstable/pod{UID}/crio-conmon-{ID_A}", None),
    # conmon outside a pod, podman's too
    (f"/system.slice/crio-conmon-{ID_A}.scope", None),
    (f"/machine.slice/libpod-conmon-{ID_A}.scope", None),
    (f"/machine.slice/libpod-{ID_A}.scope", ContainerRef("unknown", ID_A)),
    # plain docker
    (f"/docker/{ID_A}", ContainerRef("docker", ID_A)),
    (f"/system.slice/docker-{ID_A}.scope", ContainerRef("docker", ID_A)),
    (f"/actions_job/{ID_A}", ContainerRef("unknown", ID_A)),
    # host processes
    ("/user.slice/user-1000.slice/session-3.scope", None),
    ("/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service", None),
    ("/init.scope", None),
    ("/system.slice/kubelet.service", None),
    ("/", None),
    ("", None),
    # relative to the reader's cgroup namespace (an agent in its own namespace)
    (
        f"/../../../kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID_A}.scope",
        ContainerRef("containerd", ID_A, UID, "besteffort"),
    ),
    (f"/../../../besteffort/pod{UID}/{ID_A}", ContainerRef("unknown", ID_A, UID, "besteffort")),
    (f"/../../pod{UID}/{ID_A}", ContainerRef("unknown", ID_A, UID, None)),
    # a removed cgroup (v2 shows it for zombies)
    (f"/system.slice/docker-{ID_A}.scope (deleted)", ContainerRef("docker", ID_A)),
    # not ids: too short, upper case
    (f"/docker/{ID_A[:63]}", None),
    (f"/docker/{ID_A.upper()}", None),
    # pod-like names that the kubelet did not make: no kubepods level, so only the container counts
    (f"/custom/pod{UID}/{ID_A}", ContainerRef("unknown", ID_A)),
    (f"/machine.slice/machine-pod{UID_}.slice/cri-containerd-{ID_A}.scope", ContainerRef("containerd", ID_A)),
    # kubernetes in a pod of kubernetes: the outermost pod is the one the agent's kubelet made
    (
        f"/kubepods/pod{UID}/{ID_A}/kubepods/besteffort/pod{uuid.UUID(int=1)}/{ID_B}",
        ContainerRef("unknown", ID_A, UID, "guaranteed"),
    ),
]


@pytest.mark.parametrize(("path", "expected"), PATHS, ids=[p or "<empty>" for p, _ in PATHS])
def test_a_cgroup_path_resolves_to_the_container_the_kubelet_or_runtime_made(path, expected):
    assert container_from_cgroup_path(path) == expected


def test_pod_uids_come_back_dashed_from_systemd_slice_names():
    ref = container_from_proc_cgroup(read_fixture("containerd-systemd-v2.txt"))
    assert ref is not None and ref.pod_uid == "1b2c3d4e-5f6a-7b8c-9d0e-1f2a3b4c5d6e"


def test_container_refs_are_frozen_values():
    ref = ContainerRef("docker", ID_A)
    with pytest.raises(AttributeError):
        ref.container_id = ID_B  # type: ignore[misc]
    assert ref == ContainerRef("docker", ID_A, None, None)
    assert not hasattr(ref, "__dict__")  # slots


# --- which line of /proc/<pid>/cgroup --------------------------------------------------------------


def test_the_v2_line_is_preferred_over_v1_lines():
    text = f"1:name=systemd:/docker/{ID_B}\n0::/system.slice/docker-{ID_A}.scope\n"
    assert container_from_proc_cgroup(text) == ContainerRef("docker", ID_A)


def test_name_systemd_is_preferred_over_cpu_and_memory_lines():
    text = f"4:memory:/docker/{ID_B}\n1:name=systemd:/docker/{ID_A}\n"
    assert container_from_proc_cgroup(text) == ContainerRef("docker", ID_A)


def test_cpu_and_memory_lines_are_preferred_over_other_controllers():
    text = f"5:devices:/docker/{ID_B}\n4:cpu,cpuacct:/docker/{ID_A}\n"
    assert container_from_proc_cgroup(text) == ContainerRef("docker", ID_A)


def test_a_line_that_does_not_resolve_gives_way_to_one_that_does():
    text = f"0::/system.slice/containerd.service\n1:name=systemd:/\n7:pids:/kubepods/pod{UID}/{ID_A}\n"
    assert container_from_proc_cgroup(text) == ContainerRef("unknown", ID_A, UID, "guaranteed")


def test_empty_content_is_no_container():
    assert container_from_proc_cgroup("") is None


# --- ContainerResolver over a fake /proc -----------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write_cgroup(proc: Path, pid: int, text: str) -> None:
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    (proc / str(pid) / "cgroup").write_text(text, encoding="utf-8")


def container_id(n: int) -> str:
    return f"{n:064x}"


@pytest.fixture
def proc(tmp_path):
    root = tmp_path / "proc"
    root.mkdir()
    return root


def test_the_resolver_reads_each_pid_once_and_then_answers_from_its_cache(proc):
    write_cgroup(proc, 10, read_fixture("containerd-systemd-v2.txt"))
    write_cgroup(proc, 11, read_fixture("host-process.txt"))
    resolver = ContainerResolver(proc_root=str(proc))
    assert resolver.for_pid(10) == EXPECTED["containerd-systemd-v2.txt"]
    assert resolver.for_pid(11) is None
    write_cgroup(proc, 10, read_fixture("docker-plain.txt"))  # not read again: the cache answers
    assert resolver.for_pid(10) == EXPECTED["containerd-systemd-v2.txt"]
    assert (resolver.lookups, resolver.misses, resolver.errors) == (3, 2, 0)


def test_the_cache_is_an_lru_bounded_by_max_entries(proc):
    for pid in (1, 2, 3):
        write_cgroup(proc, pid, f"0::/docker/{container_id(pid)}\n")
    resolver = ContainerResolver(proc_root=str(proc), max_entries=2)
    resolver.for_pid(1)
    resolver.for_pid(2)
    resolver.for_pid(1)  # 1 is now the most recently used
    resolver.for_pid(3)  # evicts 2
    assert len(resolver) == 2
    assert resolver.evictions == 1
    misses = resolver.misses
    assert resolver.for_pid(1) == ContainerRef("docker", container_id(1))
    assert resolver.misses == misses  # still cached
    assert resolver.for_pid(2) == ContainerRef("docker", container_id(2))
    assert resolver.misses == misses + 1  # was evicted: read again
    assert len(resolver) == 2


def test_a_vanished_pid_is_none_and_not_remembered(proc):
    resolver = ContainerResolver(proc_root=str(proc))
    assert resolver.for_pid(4242) is None
    assert (resolver.lookups, resolver.misses, resolver.errors, len(resolver)) == (1, 1, 0, 0)
    write_cgroup(proc, 4242, read_fixture("docker-plain.txt"))  # the pid is reused at once
    assert resolver.for_pid(4242) == EXPECTED["docker-plain.txt"]


def test_a_host_process_is_remembered_only_for_the_negative_ttl(proc):
    clock = FakeClock()
    write_cgroup(proc, 7, read_fixture("host-process.txt"))
    resolver = ContainerResolver(proc_root=str(proc), negative_ttl_s=2.0, clock=clock)
    assert resolver.for_pid(7) is None
    write_cgroup(proc, 7, read_fixture("kind-nested.txt"))  # moved into a container cgroup
    clock.now += 1.0
    assert resolver.for_pid(7) is None
    clock.now += 1.5
    assert resolver.for_pid(7) == EXPECTED["kind-nested.txt"]
    clock.now += 3600.0  # a container found is kept
    assert resolver.for_pid(7) == EXPECTED["kind-nested.txt"]
    assert resolver.misses == 2


def test_forget_makes_the_next_lookup_read_proc_again(proc):
    write_cgroup(proc, 5, read_fixture("docker-plain.txt"))
    resolver = ContainerResolver(proc_root=str(proc))
    resolver.for_pid(5)
    write_cgroup(proc, 5, read_fixture("crio-systemd-v2.txt"))  # pid reused by another process
    resolver.forget(5)
    resolver.forget(999)  # unknown pid: no error
    assert resolver.for_pid(5) == EXPECTED["crio-systemd-v2.txt"]
    assert resolver.misses == 2


def test_a_malformed_or_unreadable_cgroup_file_is_counted_as_an_error_and_not_remembered(proc):
    write_cgroup(proc, 8, "this is not a cgroup file\n")
    (proc / "9" / "cgroup").mkdir(parents=True)  # reading it fails with IsADirectoryError
    resolver = ContainerResolver(proc_root=str(proc))
    assert resolver.for_pid(8) is None
    assert resolver.for_pid(9) is None
    assert resolver.for_pid(8) is None
    assert (resolver.lookups, resolver.misses, resolver.errors, len(resolver)) == (3, 3, 3, 0)


@pytest.mark.parametrize("kwargs", [{"max_entries": 0}, {"negative_ttl_s": -1.0}])
def test_the_resolver_rejects_meaningless_bounds(kwargs):
    with pytest.raises(ValueError):
        ContainerResolver(**kwargs)


# --- this machine -----------------------------------------------------------------------------------


def test_this_machines_proc_self_cgroup_parses_and_this_test_is_a_host_process():
    text = Path("/proc/self/cgroup").read_text(encoding="utf-8")
    entries = parse_proc_cgroup(text)
    assert entries, text
    assert container_from_proc_cgroup(text) is None, f"this test expects to run on a host, not in a container:\n{text}"
    resolver = ContainerResolver()
    assert resolver.for_pid(os.getpid()) is None
    assert (resolver.misses, resolver.errors) == (1, 0)


# --- cgroup_v2_mount ----------------------------------------------------------------------------------

MOUNTINFO_HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
MOUNTINFO_V2 = """\
22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""
MOUNTINFO_ESCAPED = "50 22 0:40 / /mnt/my\\040cgroups rw,relatime shared:9 master:2 - cgroup2 none rw\n"
MOUNTINFO_V1_ONLY = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"


@pytest.mark.parametrize(
    ("mountinfo", "expected"),
    [
        (MOUNTINFO_HYBRID, Path("/sys/fs/cgroup/unified")),
        (MOUNTINFO_V2, Path("/sys/fs/cgroup")),
        (MOUNTINFO_ESCAPED, Path("/mnt/my cgroups")),
        (MOUNTINFO_V1_ONLY, None),
    ],
    ids=["hybrid", "v2", "escaped", "v1-only"],
)
def test_the_cgroup2_mount_is_found_in_mountinfo(tmp_path, mountinfo, expected):
    (tmp_path / "mountinfo").write_text(mountinfo, encoding="utf-8")
    assert cgroup_v2_mount(mountinfo=str(tmp_path / "mountinfo")) == expected


def test_no_mountinfo_means_no_cgroup2_mount(tmp_path):
    assert cgroup_v2_mount(mountinfo=str(tmp_path / "absent")) is None


# --- make_pod_cgroup / remove_cgroup on plain directories ---------------------------------------------


@pytest.mark.parametrize(
    ("driver", "qos", "runtime", "relative"),
    [
        (
            "systemd",
            "burstable",
            "containerd",
            f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID_A}.scope",
        ),
        ("systemd", "guaranteed", "cri-o", f"kubepods.slice/kubepods-pod{UID_}.slice/crio-{ID_A}.scope"),
        (
            "systemd",
            "besteffort",
            "docker",
            f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/docker-{ID_A}.scope",
        ),
        ("cgroupfs", "burstable", "containerd", f"kubepods/burstable/pod{UID}/{ID_A}"),
        ("cgroupfs", "guaranteed", "cri-o", f"kubepods/pod{UID}/crio-{ID_A}"),
    ],
)
def test_make_pod_cgroup_lays_directories_out_like_the_kubelet_and_the_parser_reads_them_back(
    tmp_path, driver, qos, runtime, relative
):
    path = make_pod_cgroup(tmp_path, UID, ID_A, qos=qos, driver=driver, runtime=runtime)
    assert path == tmp_path / relative
    assert path.is_dir()
    ref = container_from_cgroup_path("/" + str(path.relative_to(tmp_path)))
    assert ref is not None
    assert (ref.container_id, ref.pod_uid, ref.qos) == (ID_A, UID, qos)
    assert ref.runtime == (runtime if driver == "systemd" or runtime == "cri-o" else "unknown")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pod_uid": UID_},
        {"pod_uid": UID.upper()},
        {"container_id": ID_A[:12]},
        {"qos": "gold"},
        {"driver": "cgroupv3"},
        {"runtime": "unknown"},
    ],
)
def test_make_pod_cgroup_rejects_what_the_kubelet_would_never_make(tmp_path, kwargs):
    arguments = {"pod_uid": UID, "container_id": ID_A, **kwargs}
    with pytest.raises(ValueError):
        make_pod_cgroup(tmp_path, **arguments)
    assert list(tmp_path.iterdir()) == []


def test_remove_cgroup_removes_a_tree_deepest_first_and_ignores_a_missing_one(tmp_path):
    top = tmp_path / "top"
    make_pod_cgroup(top, UID, ID_A)
    make_pod_cgroup(top, UID, ID_B)
    remove_cgroup(top)
    assert not top.exists()
    remove_cgroup(top)  # again: nothing to do


# --- real cgroups on this machine (root, cgroup2) ---------------------------------------------------


def _real_cgroups_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create cgroups"
    mount = cgroup_v2_mount()
    if mount is None:
        return "no cgroup2 hierarchy mounted"
    if not os.access(mount, os.W_OK):
        return f"{mount} is not writable"
    return None


@pytest.fixture
def cgroup2_test_root():
    """A test-owned cgroup below the cgroup2 mount, removed afterwards.

    Never the mount's top level: on a real node ``kubepods.slice`` exists there and belongs to
    the kubelet (and systemd owns the top level's ``*.slice`` names); the parser finds the kubepods
    levels at any depth, so nesting them under ``otel-ebpf-test-<pid>/`` loses nothing.
    """
    reason = _real_cgroups_unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"real cgroup test cannot run under CI: {reason}")
        pytest.skip(reason)
    mount = cgroup_v2_mount()
    assert mount is not None
    root = mount / f"otel-ebpf-test-{os.getpid()}"
    try:
        root.mkdir()
    except OSError as e:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"cannot create a cgroup under {mount}: {e}")
    try:
        yield root
    finally:
        remove_cgroup(root)
        assert not root.exists()


@pytest.mark.parametrize(
    ("driver", "qos", "runtime"),
    [
        ("systemd", "burstable", "containerd"),
        ("systemd", "guaranteed", "cri-o"),
        ("cgroupfs", "besteffort", "containerd"),
    ],
)
def test_a_process_moved_into_a_kubelet_shaped_cgroup_resolves_to_that_container_and_pod(
    cgroup2_test_root, driver, qos, runtime
):
    pod_uid = str(uuid.uuid4())
    cid = os.urandom(32).hex()
    path = make_pod_cgroup(cgroup2_test_root, pod_uid, cid, qos=qos, driver=driver, runtime=runtime)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        move_pid(path, sleeper.pid)
        text = Path(f"/proc/{sleeper.pid}/cgroup").read_text(encoding="utf-8")
        v2_paths = [p for h, c, p in parse_proc_cgroup(text) if h == 0 and c == ""]
        mount = cgroup_v2_mount()
        assert mount is not None
        assert v2_paths == ["/" + str(path.relative_to(mount))], text
        resolver = ContainerResolver()
        ref = resolver.for_pid(sleeper.pid)
        expected_runtime = runtime if driver == "systemd" else "unknown"
        assert ref == ContainerRef(expected_runtime, cid, pod_uid, qos), text
        assert resolver.for_pid(os.getpid()) is None  # the test itself stays a host process
    finally:
        sleeper.kill()
        sleeper.wait()
    assert resolver.for_pid(sleeper.pid) == ref  # cached until forgotten
    resolver.forget(sleeper.pid)
    assert resolver.for_pid(sleeper.pid) is None  # vanished
