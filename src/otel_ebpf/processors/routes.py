"""Route normalisation: ``http.route`` from configured patterns, ``url.template`` guessed.

Usage::

    from otel_ebpf.processors.routes import RoutesConfig, RoutesProcessor

    processor = RoutesProcessor(RoutesConfig(patterns=["/users/{id}", "/static/*"]))
    ex = processor.process(exchange)
    ex.route          # "/users/{id}" when the path matched a pattern, else None
    ex.url_template   # always set when the target has a path: "/users/{id}", "/orders/{id}/items"

Patterns (YAML ``routes.patterns``) are absolute paths whose segments are literals,
``{name}`` (exactly one non-empty segment) or ``*`` (exactly one segment; as the *last*
segment it matches the rest of the path, one or more segments). Literals match
case-sensitively on the raw (still percent-encoded) path. One trailing slash is ignored
(``/users/42/`` matches ``/users/{id}``). Patterns without placeholders are looked up
first; the others are tried in the order configured and the first match wins, so list
``/users/me`` before ``/users/{id}`` only if both have placeholders. A matched pattern
becomes ``exchange.route`` and ``exchange.url_template``.

Only configured patterns produce ``http.route``: semconv forbids substituting a guessed
value there. Every other path gets a guessed ``url.template``, replacing one whole
segment at a time; the rules are conservative (a segment is kept unless it clearly is
data), checked in this order:

====================================================  ===========  ===========================
segment                                               becomes      examples
====================================================  ===========  ===========================
all digits                                            ``{id}``     ``42``, ``2024``
UUID (8-4-4-4-12 hex, any case, braces optional)      ``{id}``     ``123e4567-e89b-...``
hex of 8+ characters with at least one digit          ``{id}``     ``5f2b9c0e``, a git SHA
4+ digits mixed with other characters                 ``{id}``     ``INV-20240115``, ``user_12345``
an e-mail address (``x@y.z``)                         ``*``        ``bob@example.com``
16+ characters mixing letters and digits              ``*``        JWTs, base64, slugs with numbers
64+ characters                                        ``*``        anything that long is data
====================================================  ===========  ===========================

So ``v1``, ``v2``, ``sha256``, ``ipv6``, ``users``, ``reset-password`` stay as they are.
Templates are cut after 32 segments (``/…/*``). Non-path targets (``CONNECT host:443``)
get no template; ``OPTIONS *`` gets ``*``. A bounded cache maps path → (route, template)
(``cache_size``, evictions counted in ``cache_evictions``).

When no configured pattern matches, a ``route`` or ``url_template`` an earlier stage already set
is kept (the guess only fills what is missing); a configured match always wins.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from otel_ebpf.records import Exchange, annotate

__all__ = ["RoutesConfig", "RoutesProcessor", "guess_template", "target_path"]

_DEFAULT_CACHE_SIZE = 8192
_MAX_TEMPLATE_SEGMENTS = 32
_LONG_TOKEN = 16
_VERY_LONG = 64

_PARAM_RE = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_.-]*)\}$")
_UUID_RE = re.compile(r"^\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?$")
_HEX_RE = re.compile(r"^[0-9a-fA-F]{8,}$")
_EMAIL_RE = re.compile(r"^[^@/]+(@|%40)[^@/]+\.[^@/]+$")
_DIGIT_RE = re.compile(r"\d")
_ALPHA_RE = re.compile(r"[A-Za-z]")


def target_path(target: str) -> str | None:
    """The path of a request-target (origin-form or absolute-form), ``*`` for asterisk-form,
    None for authority-form (``CONNECT``) or garbage."""
    if not target:
        return None
    c = target[0]
    if c == "/":
        end = len(target)
        q = target.find("?")
        if q >= 0:
            end = q
        h = target.find("#", 0, end)
        if h >= 0:
            end = h
        return target[:end]
    if target == "*":
        return "*"
    scheme_end = target.find("://")
    if scheme_end > 0:
        rest = target[scheme_end + 3 :]
        cut = len(rest)
        for sep in "/?#":
            i = rest.find(sep)
            if 0 <= i < cut:
                cut = i
        tail = rest[cut:]
        if not tail or tail[0] != "/":
            return "/"
        return target_path(tail)
    return None


def _guess_segment(seg: str) -> str:
    if not seg:
        return seg
    if seg.isdigit():
        return "{id}"
    n = len(seg)
    if n >= 8:
        if n in (36, 38) and _UUID_RE.match(seg):
            return "{id}"
        if _HEX_RE.match(seg) and _DIGIT_RE.search(seg):
            return "{id}"
    digits = sum(ch.isdigit() for ch in seg)
    if digits >= 4:
        return "{id}"
    if ("@" in seg or "%40" in seg) and _EMAIL_RE.match(seg):
        return "*"
    if n >= _VERY_LONG:
        return "*"
    if n >= _LONG_TOKEN and digits and _ALPHA_RE.search(seg):
        return "*"
    return seg


def guess_template(path: str) -> str:
    """Low-cardinality template of ``path`` by the rules in the module docstring."""
    if path == "*" or path == "/":
        return path
    segments = path.split("/")
    out = [_guess_segment(s) for s in segments[: _MAX_TEMPLATE_SEGMENTS + 1]]
    if len(segments) > _MAX_TEMPLATE_SEGMENTS + 1:
        out.append("*")
    return "/".join(out)


@dataclass(slots=True)
class RoutesConfig:
    """YAML ``routes:`` section. Field names are the YAML keys."""

    patterns: list[str] = field(default_factory=list)
    guess_templates: bool = True
    cache_size: int = _DEFAULT_CACHE_SIZE

    @classmethod
    def create_default_config(cls) -> RoutesConfig:
        return cls()

    def validate(self) -> None:
        """Raise ValueError naming the YAML key of the first bad value."""
        if not isinstance(self.patterns, (list, tuple)):
            raise ValueError("routes.patterns: must be a list of path patterns")
        seen = set()
        for pattern in self.patterns:
            _compile_pattern(pattern)  # raises with the key name
            if pattern in seen:
                raise ValueError(f"routes.patterns: {pattern!r} is listed twice")
            seen.add(pattern)
        if not isinstance(self.guess_templates, bool):
            raise ValueError("routes.guess_templates: must be true or false")
        if not isinstance(self.cache_size, int) or isinstance(self.cache_size, bool) or self.cache_size < 1:
            raise ValueError(f"routes.cache_size: must be a positive integer, got {self.cache_size!r}")


@dataclass(frozen=True, slots=True)
class _Pattern:
    text: str
    segments: tuple[str | None, ...]  # literal, or None for a one-segment placeholder
    rest: bool  # trailing "*": one or more further segments


def _compile_pattern(pattern: object) -> _Pattern:
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        raise ValueError(f"routes.patterns: {pattern!r} must be a path starting with '/'")
    if any(c in pattern for c in "?# \t\r\n"):
        raise ValueError(f"routes.patterns: {pattern!r} must not contain a query, fragment or whitespace")
    body = pattern[1:]
    if body.endswith("/"):
        body = body[:-1]
    raw = body.split("/") if body else []
    segments: list[str | None] = []
    rest = False
    names = set()
    for i, seg in enumerate(raw):
        if seg == "*":
            if i == len(raw) - 1:
                rest = True
            else:
                segments.append(None)
            continue
        if "{" in seg or "}" in seg:
            m = _PARAM_RE.match(seg)
            if not m:
                raise ValueError(
                    f"routes.patterns: {pattern!r}: a placeholder must be a whole segment like {{id}}, got {seg!r}"
                )
            if m.group(1) in names:
                raise ValueError(f"routes.patterns: {pattern!r}: placeholder {{{m.group(1)}}} used twice")
            names.add(m.group(1))
            segments.append(None)
            continue
        if "*" in seg:
            raise ValueError(f"routes.patterns: {pattern!r}: '*' must be a whole segment, got {seg!r}")
        if not seg:
            raise ValueError(f"routes.patterns: {pattern!r} has an empty segment")
        segments.append(seg)
    return _Pattern(pattern, tuple(segments), rest)


def _matches(p: _Pattern, segs: list[str]) -> bool:
    n = len(p.segments)
    if p.rest:
        if len(segs) <= n:
            return False
    elif len(segs) != n:
        return False
    for want, got in zip(p.segments, segs):
        if want is None:
            if not got:
                return False
        elif want != got:
            return False
    return True


class RoutesProcessor:
    """Sets ``route`` (configured patterns only) and ``url_template`` (always, when there is a path)."""

    def __init__(self, config: RoutesConfig | None = None) -> None:
        config = config or RoutesConfig.create_default_config()
        config.validate()
        compiled = [_compile_pattern(p) for p in config.patterns]
        self._exact = {}
        for p in compiled:
            if not p.rest and all(s is not None for s in p.segments):
                self._exact.setdefault("/" + "/".join(p.segments), p.text)  # type: ignore[arg-type]
        self._templated = [p for p in compiled if p.rest or any(s is None for s in p.segments)]
        self._guess = config.guess_templates
        self._cache: OrderedDict[str, tuple[str | None, str | None]] = OrderedDict()
        self._cache_size = config.cache_size
        self._lock = threading.Lock()
        self.cache_evictions = 0

    def lookup(self, path: str) -> tuple[str | None, str | None]:
        """(route, url_template) for a path."""
        hit = self._cache.get(path)
        if hit is not None:
            return hit
        result = self._compute(path)
        with self._lock:
            self._cache[path] = result
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
                self.cache_evictions += 1
        return result

    def _compute(self, path: str) -> tuple[str | None, str | None]:
        if path == "*":
            return None, "*"
        norm = path[:-1] if len(path) > 1 and path.endswith("/") else path
        route = self._exact.get(norm)
        if route is None and self._templated:
            segs = norm[1:].split("/") if norm != "/" else []
            for p in self._templated:
                if _matches(p, segs):
                    route = p.text
                    break
        if route is not None:
            return route, route
        return None, (guess_template(path) if self._guess else None)

    def process(self, exchange: Exchange) -> Exchange:
        try:
            path = target_path(exchange.request.target)
            if path is None:
                return exchange
            route, template = self.lookup(path)
        except Exception:
            return exchange
        if route is None:
            # nothing configured matched: keep what an earlier stage knew
            route = exchange.route
            template = exchange.url_template or exchange.route or template
        if route == exchange.route and template == exchange.url_template:
            return exchange
        return annotate(exchange, route=route, url_template=template)
