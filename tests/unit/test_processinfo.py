from __future__ import annotations

import os
import sys
import threading

import pytest

from otel_ebpf.processinfo import (
    UNKNOWN_EXECUTABLE,
    UNKNOWN_SERVICE,
    ProcessInfoCache,
    infer_service_name,
    parse_resource_attributes,
    redact_command_line,
)

from .factories import make_fake_proc


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def proc(tmp_path):
    return tmp_path


def test_the_service_name_comes_from_otel_service_name_first(proc):
    make_fake_proc(
        proc,
        10,
        ["python3", "app.py"],
        exe="/usr/bin/python3.11",
        environ={"OTEL_SERVICE_NAME": "orders", "OTEL_RESOURCE_ATTRIBUTES": "service.name=other", "PATH": "/bin"},
    )
    info = ProcessInfoCache(proc_root=str(proc)).get(10)
    assert info.service_name == "orders"
    assert info.executable_name == "python3.11"
    assert info.executable_path == "/usr/bin/python3.11"
    assert info.alive


def test_the_processs_own_resource_attributes_are_parsed_and_can_name_the_service(proc):
    make_fake_proc(
        proc,
        11,
        ["/srv/bin/api"],
        exe="/srv/bin/api",
        environ={"OTEL_RESOURCE_ATTRIBUTES": "service.name=billing,deployment.environment.name=prod%20eu, team = a "},
    )
    info = ProcessInfoCache(proc_root=str(proc)).get(11)
    assert info.service_name == "billing"
    assert info.otel_resource_attributes == {
        "service.name": "billing",
        "deployment.environment.name": "prod eu",
        "team": "a",
    }


@pytest.mark.parametrize(
    ("argv", "exe", "service"),
    [
        (["python3", "app.py"], "/usr/bin/python3.11", "app"),
        (["python3", "-m", "http.server", "8000"], "/usr/bin/python3.11", "http.server"),
        (["python3", "/x/y/serve.py", "--port", "1"], "/usr/bin/python3.11", "serve"),
        (["python3", "-u", "-W", "ignore", "-X", "dev", "worker.py"], "/usr/bin/python3.11", "worker"),
        (["python", "-mhttp.server"], "/usr/bin/python3.12", "http.server"),
        (["/usr/bin/python3", "/usr/local/bin/gunicorn", "app:app"], "/usr/bin/python3.11", "gunicorn"),
        (["python3", "-c", "print(1)"], "/usr/bin/python3.11", "python3.11"),
        (["python3"], "/usr/bin/python3.11", "python3.11"),
        (["node", "--require", "otel.js", "dist/server.js"], "/usr/bin/node", "server"),
        (["node", "-e", "1"], "/usr/bin/node", "node"),
        (["java", "-Xmx1g", "-jar", "/srv/orders-1.2.3-SNAPSHOT.jar"], "/usr/lib/jvm/bin/java", "orders"),
        (["java", "-cp", "lib/*", "com.acme.Main"], "/usr/lib/jvm/bin/java", "com.acme.Main"),
        (["java", "-m", "acme.app/com.acme.Main"], "/usr/lib/jvm/bin/java", "com.acme.Main"),
        (["ruby", "-I", "lib", "app.rb"], "/usr/bin/ruby3.1", "app"),
        (["perl", "-I", "lib", "cgi.pl"], "/usr/bin/perl", "cgi"),
        (["php", "index.php"], "/usr/bin/php8.2", "index"),
        (["php", "-S", "0.0.0.0:8000"], "/usr/bin/php8.2", "php8.2"),
        (["nginx: master process /usr/sbin/nginx"], "/usr/sbin/nginx", "nginx"),
        (["/usr/sbin/envoy", "-c", "envoy.yaml"], "/usr/sbin/envoy", "envoy"),
    ],
)
def test_the_service_name_is_inferred_from_the_command_line(proc, argv, exe, service):
    make_fake_proc(proc, 20, argv, exe=exe, environ={})
    assert ProcessInfoCache(proc_root=str(proc)).get(20).service_name == service


def test_infer_service_name_works_on_plain_arguments():
    assert infer_service_name("python3.11", ["python3", "app.py"]) == "app"
    assert infer_service_name("", []) == UNKNOWN_SERVICE


def test_without_a_readable_exe_link_the_name_comes_from_argv0(proc):
    make_fake_proc(proc, 21, ["/opt/bin/server", "--port", "80"])
    info = ProcessInfoCache(proc_root=str(proc)).get(21)
    assert info.executable_name == "server"
    assert info.executable_path is None
    assert info.service_name == "server"


def test_a_process_without_a_command_line_is_named_by_comm(proc):
    make_fake_proc(proc, 22, [], comm="kworker/0:1")
    info = ProcessInfoCache(proc_root=str(proc)).get(22)
    assert info.executable_name == "kworker/0:1"
    assert info.command_line == "[kworker/0:1]"


def test_the_command_line_is_redacted(proc):
    make_fake_proc(
        proc,
        23,
        ["app", "--password", "hunter2", "--api-key=k", "--port", "80", "DB_TOKEN=x", "postgres://u:p@db/x"],
        exe="/usr/bin/app",
    )
    info = ProcessInfoCache(proc_root=str(proc)).get(23)
    assert info.command_line == (
        "app --password REDACTED --api-key=REDACTED --port 80 DB_TOKEN=REDACTED postgres://REDACTED:REDACTED@db/x"
    )


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["x", "--secret", "--verbose"], "x --secret --verbose"),
        (["x", "--client-secret", "s", "y"], "x --client-secret REDACTED y"),
        (["x", "--url=https://h/p?token=t&a=b"], "x --url=https://h/p?token=REDACTED&a=b"),
        (["x", "AWS_SECRET_ACCESS_KEY=abc", "PATH=/bin"], "x AWS_SECRET_ACCESS_KEY=REDACTED PATH=/bin"),
    ],
)
def test_command_line_redaction_rules(argv, line):
    assert redact_command_line(argv) == line


def test_a_very_long_command_line_is_cut():
    assert len(redact_command_line(["x" * 10000])) == 4096


def test_a_gone_process_gets_a_best_effort_info_that_is_cached(proc):
    cache = ProcessInfoCache(proc_root=str(proc))
    info = cache.get(999)
    assert info.executable_name == UNKNOWN_EXECUTABLE
    assert info.service_name == UNKNOWN_SERVICE
    assert not info.alive
    assert cache.get(999) is info
    assert cache.stats()["reads"] == 1


def test_the_cache_is_a_bounded_lru_that_counts_evictions(proc):
    for pid in (1, 2, 3):
        make_fake_proc(proc, pid, [f"svc{pid}"], exe=f"/bin/svc{pid}")
    cache = ProcessInfoCache(proc_root=str(proc), max_entries=2)
    cache.get(1)
    cache.get(2)
    cache.get(1)  # 1 is now the most recent
    cache.get(3)  # evicts 2
    assert len(cache) == 2
    assert cache.evictions == 1
    reads = cache.reads
    cache.get(1)
    assert cache.reads == reads
    cache.get(2)
    assert cache.reads == reads + 1


def test_entries_are_re_read_after_the_ttl_and_unchanged_facts_keep_the_same_object(proc):
    clock = FakeClock()
    make_fake_proc(proc, 30, ["python3", "a.py"], exe="/usr/bin/python3")
    cache = ProcessInfoCache(proc_root=str(proc), ttl_s=10, clock=clock)
    first = cache.get(30)
    clock.now += 11
    assert cache.get(30) is first
    assert cache.reads == 2
    make_fake_proc(proc, 30, ["python3", "b.py"], exe="/usr/bin/python3")  # the pid exec'd something else
    assert cache.get(30) is first  # still within the new TTL
    clock.now += 11
    second = cache.get(30)
    assert second is not first
    assert second.service_name == "b"


def test_forget_drops_a_pid(proc):
    make_fake_proc(proc, 31, ["a"], exe="/bin/a")
    cache = ProcessInfoCache(proc_root=str(proc))
    cache.get(31)
    cache.forget(31)
    assert len(cache) == 0


def test_the_cache_is_safe_to_use_from_many_threads(proc):
    for pid in range(100, 140):
        make_fake_proc(proc, pid, [f"s{pid}"], exe=f"/bin/s{pid}")
    cache = ProcessInfoCache(proc_root=str(proc), max_entries=16)
    errors = []

    def hammer(offset):
        try:
            for i in range(400):
                pid = 100 + (i * 7 + offset) % 40
                assert cache.get(pid).service_name == f"s{pid}"
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(cache) <= 16


def test_parse_resource_attributes_skips_bad_members():
    assert parse_resource_attributes("a=1,,=x,novalue,b = 2,c=%E2%9C%93") == {"a": "1", "b": "2", "c": "\u2713"}
    assert parse_resource_attributes(None) == {}


def test_the_real_current_process_is_described():
    info = ProcessInfoCache().get(os.getpid())
    assert info.alive
    assert info.pid == os.getpid()
    assert info.executable_name == os.path.basename(os.readlink("/proc/self/exe"))
    assert os.path.basename(sys.argv[0]).split(".")[0] in info.command_line or "pytest" in info.command_line
    assert info.service_name
