"""The SDK's OTLP span exporters (gRPC and HTTP/protobuf) sending :func:`encode_trace_request` bytes.

Usage::

    from otel_ebpf.telemetry.otlp_exporters import FastOtlpGrpcSpanExporter
    exporter = FastOtlpGrpcSpanExporter(endpoint="http://collector:4317", insecure=True)

Only the encoding is swapped (see :mod:`otel_ebpf.telemetry.otlp_fast`); configuration, retries,
TLS, headers and compression are the SDK's. A module of its own so that importing the encoder does
not import grpc.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as _GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as _HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from otel_ebpf.telemetry.otlp_fast import encode_trace_request

__all__ = ["FastOtlpGrpcSpanExporter", "FastOtlpHttpSpanExporter"]


class _RawTraceStub:
    """TraceService stub whose request is already-serialised bytes."""

    def __init__(self, channel) -> None:
        self.Export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=lambda data: data,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )


class FastOtlpGrpcSpanExporter(_GrpcSpanExporter):
    """The SDK's OTLP/gRPC span exporter, sending :func:`encode_trace_request` bytes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._stub = _RawTraceStub  # also used when the SDK re-creates its channel
        if self._channel is not None:
            self._client = _RawTraceStub(self._channel)

    def _translate_data(self, data: Sequence[ReadableSpan]) -> bytes:  # type: ignore[override]
        return encode_trace_request(data)


class FastOtlpHttpSpanExporter(_HttpSpanExporter):
    """The SDK's OTLP/HTTP span exporter, posting :func:`encode_trace_request` bytes."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            try:
                data = encode_trace_request(spans)
            except Exception as error:  # noqa: BLE001 -- as the SDK exporter: a batch that cannot be encoded fails
                result.error = error
                return SpanExportResult.FAILURE
            export_result = self._client.export(data)
            if not export_result.success:
                result.error = export_result.error
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
