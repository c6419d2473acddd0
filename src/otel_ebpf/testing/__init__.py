"""Test doubles shipped with otel-ebpf, for its own tests and for yours.

Usage::

    from otel_ebpf.testing import OtlpReceiver

    with OtlpReceiver() as receiver:
        ...  # point an OTLP exporter at receiver.grpc_endpoint or receiver.http_endpoint
        spans = receiver.wait_for_spans(1)
"""

from otel_ebpf.testing.otlp_receiver import (
    SPAN_KIND_CLIENT,
    SPAN_KIND_INTERNAL,
    SPAN_KIND_SERVER,
    OtlpReceiver,
    ReceivedLog,
    ReceivedMetric,
    ReceivedRequest,
    ReceivedSpan,
)
from otel_ebpf.testing.net import free_port, wait_listening
from otel_ebpf.testing.sinks import ExchangeSink
from otel_ebpf.testing.zipkin_receiver import ZipkinReceiver

__all__ = [
    "ExchangeSink",
    "free_port",
    "wait_listening",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "OtlpReceiver",
    "ReceivedLog",
    "ReceivedMetric",
    "ReceivedRequest",
    "ReceivedSpan",
    "ZipkinReceiver",
]
