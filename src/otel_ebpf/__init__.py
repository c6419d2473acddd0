"""otel-ebpf: eBPF capture of TCP and HTTP traffic turned into OpenTelemetry.

Usage (library, with your own SDK providers)::

    from otel_ebpf import HttpReceiver, HttpReceiverConfig, SdkTelemetry
    telemetry = SdkTelemetry(tracer_provider=my_tracer_provider, meter_provider=my_meter_provider)
    receiver = HttpReceiver(HttpReceiverConfig(ports=[8080]), telemetry)
    receiver.start()
    ...
    receiver.shutdown()

Usage (agent)::

    otel-ebpf run
"""

__version__ = "0.1.0"

from .records import Connection, Direction, Exchange, HttpRequest, HttpResponse, Role  # noqa: E402
from .receivers.http import HttpReceiver, HttpReceiverConfig  # noqa: E402
from .telemetry.sdk import SdkTelemetry  # noqa: E402

__all__ = [
    "Connection", "Direction", "Exchange", "HttpRequest", "HttpResponse", "Role",
    "HttpReceiver", "HttpReceiverConfig", "SdkTelemetry", "__version__",
]
