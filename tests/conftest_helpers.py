"""Small predicates shared by kernel tests."""

from otel_ebpf.records import Role


def server_side(server):
    return lambda e: e.connection.pid == server.pid and e.connection.role == Role.SERVER


def client_side(server):
    return lambda e: e.connection.pid != server.pid and e.connection.role == Role.CLIENT and \
        e.connection.remote_port == server.port
