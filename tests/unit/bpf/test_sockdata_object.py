"""What SockDataTracer writes into the sockdata object, checked against the object's BTF: the
knobs it sets and the filter configuration it packs by hand."""

from __future__ import annotations

import pytest

from otel_ebpf.bpf.btf import BpfObjectInfo
from otel_ebpf.bpf.sockdata import INGRESS_ENTER_PROGRAMS, object_path

OBJECT = object_path()


@pytest.fixture(scope="module")
def info() -> BpfObjectInfo:
    if not OBJECT.exists():
        pytest.fail(f"{OBJECT} is missing: run `make bpf`")
    return BpfObjectInfo.from_file(OBJECT)


def test_the_knob_for_entry_times_of_reads_is_one_byte(info):
    assert info.rodata_symbols["ingress_enter"][1] == 1


def test_filter_config_is_the_three_u32_that_set_ports_and_set_pids_pack(info):
    # sockdata.py packs struct filter_config as "<III": pid_filter, port_filter, generation
    layout = {m.name: (m.offset, m.size) for m in info.btf.struct_layout("filter_config")}
    assert layout == {"pid_filter": (0, 4), "port_filter": (4, 4), "generation": (8, 4)}
    assert info.btf.struct_size("filter_config") == 12


def test_the_entry_programs_left_out_by_default_are_the_read_family_only():
    assert set(INGRESS_ENTER_PROGRAMS) == {
        "sys_enter_read", "sys_enter_recvfrom", "sys_enter_readv", "sys_enter_recvmsg", "sys_enter_recvmmsg"}
    assert OBJECT.exists()
    data = OBJECT.read_bytes()
    for name in INGRESS_ENTER_PROGRAMS:  # they exist in the object (loaded when entry times are asked for)
        assert f"tracepoint/syscalls/{name}".encode() in data
