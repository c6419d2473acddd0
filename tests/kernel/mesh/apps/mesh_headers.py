"""Headers the mesh apps copy onto their outbound call with --propagate forward."""

FORWARDED = (
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "x-request-id",
)
