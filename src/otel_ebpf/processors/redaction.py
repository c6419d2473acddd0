"""Redaction: removes credentials from exchanges before anything leaves the agent.

Usage::

    from otel_ebpf.processors.redaction import RedactionConfig, RedactionProcessor

    config = RedactionConfig.create_default_config()
    config.extra_headers = ["x-api-key"]
    config.validate()
    processor = RedactionProcessor(config)
    clean = processor.process(exchange)   # a new Exchange (or the same one if nothing to hide)

What is replaced by ``REDACTED`` (the value the HTTP semantic conventions use):

* header values (request and response headers and trailers) of ``authorization``,
  ``proxy-authorization``, ``cookie``, ``set-cookie`` (always) and of every name in
  ``extra_headers`` (YAML ``redaction.extra_headers``);
* query-string values in ``request.target`` whose key looks secret: keys equal
  (case-insensitively, after percent-decoding) to one of ``query_keys`` or matching the regular
  expression ``query_key_pattern`` (searched, case-insensitive). The key is kept:
  ``/cb?code=abc&state=x`` becomes ``/cb?code=REDACTED&state=x``. Empty values stay empty;
* user information in an absolute-form target (``http://user:pw@host/``) becomes
  ``REDACTED:REDACTED`` as semconv asks for ``url.full``;
* the same query and user-information rules apply to the URL-valued headers ``referer``,
  ``location`` and ``content-location``.

``process()`` never raises: should an unexpected input break the rules above, the query string
is dropped whole and the sensitive headers are still redacted (counted in ``errors``).
The matcher keeps a bounded cache of key decisions (``cache_size``; evictions counted).
"""

from __future__ import annotations

import dataclasses
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

from otel_ebpf.records import Exchange, Headers

__all__ = [
    "ALWAYS_REDACTED_HEADERS",
    "DEFAULT_QUERY_KEYS",
    "DEFAULT_QUERY_KEY_PATTERN",
    "REDACTED",
    "RedactionConfig",
    "RedactionProcessor",
    "SecretKeyMatcher",
]

REDACTED = "REDACTED"
"""Replacement value, as in the HTTP semantic conventions (``url.query``, ``url.full``)."""

ALWAYS_REDACTED_HEADERS = ("authorization", "proxy-authorization", "cookie", "set-cookie")
"""Header names whose values are always replaced; ``extra_headers`` adds to them."""

DEFAULT_QUERY_KEYS = (
    # the four keys semconv asks to redact by default
    "awsaccesskeyid",
    "signature",
    "sig",
    "x-goog-signature",
    # common credential carriers
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "api-key",
    "key",
    "secret",
    "client_secret",
    "password",
    "passwd",
    "pwd",
    "pass",
    "auth",
    "authorization",
    "session",
    "sessionid",
    "session_id",
    "sid",
    "jwt",
    "code",
    "otp",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
)
"""Query keys redacted by exact (case-insensitive) name."""

DEFAULT_QUERY_KEY_PATTERN = (
    r"token|secret|passw(or)?d|api[-_]?key|signature|credential|session|jwt|private[-_]?key"
    r"|(^|[-_.])auth([-_.]|$)|(^|[-_.])(sig|pwd|otp)([-_.]|$)"
)
"""Query keys redacted when this expression is found in them (case-insensitive)."""

_URL_HEADERS = frozenset(("referer", "location", "content-location"))
_DEFAULT_CACHE_SIZE = 4096
_USERINFO_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#@]*@)")


@dataclass(slots=True)
class RedactionConfig:
    """YAML ``redaction:`` section. Field names are the YAML keys."""

    extra_headers: list[str] = field(default_factory=list)
    query_keys: list[str] = field(default_factory=lambda: list(DEFAULT_QUERY_KEYS))
    query_key_pattern: str | None = DEFAULT_QUERY_KEY_PATTERN
    cache_size: int = _DEFAULT_CACHE_SIZE

    @classmethod
    def create_default_config(cls) -> RedactionConfig:
        return cls()

    def validate(self) -> None:
        """Raise ValueError naming the YAML key of the first bad value."""
        if not isinstance(self.extra_headers, (list, tuple)):
            raise ValueError("redaction.extra_headers: must be a list of header names")
        for name in self.extra_headers:
            if not isinstance(name, str) or not name.strip() or any(c in name for c in " \t:\r\n"):
                raise ValueError(f"redaction.extra_headers: {name!r} is not a header name")
        if not isinstance(self.query_keys, (list, tuple)):
            raise ValueError("redaction.query_keys: must be a list of query parameter names")
        for key in self.query_keys:
            if not isinstance(key, str) or not key:
                raise ValueError(f"redaction.query_keys: {key!r} is not a query parameter name")
        if self.query_key_pattern is not None:
            if not isinstance(self.query_key_pattern, str):
                raise ValueError("redaction.query_key_pattern: must be a regular expression string")
            try:
                re.compile(self.query_key_pattern)
            except re.error as exc:
                raise ValueError(f"redaction.query_key_pattern: invalid regular expression: {exc}") from None
        if not isinstance(self.cache_size, int) or isinstance(self.cache_size, bool) or self.cache_size < 1:
            raise ValueError(f"redaction.cache_size: must be a positive integer, got {self.cache_size!r}")


class SecretKeyMatcher:
    """Decides whether a query (or ``KEY=VALUE``) key looks secret. Thread-safe, bounded cache."""

    def __init__(
        self,
        *,
        keys: tuple[str, ...] | list[str] = DEFAULT_QUERY_KEYS,
        pattern: str | None = DEFAULT_QUERY_KEY_PATTERN,
        cache_size: int = _DEFAULT_CACHE_SIZE,
    ) -> None:
        self._keys = frozenset(k.lower() for k in keys)
        self._pattern = re.compile(pattern, re.IGNORECASE) if pattern else None
        self._cache: dict[str, bool] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.cache_evictions = 0

    def __call__(self, raw_key: str) -> bool:
        hit = self._cache.get(raw_key)
        if hit is not None:
            return hit
        key = raw_key
        if "%" in key or "+" in key:
            key = unquote_plus(key, errors="replace")
        key = key.strip().lower()
        secret = key in self._keys or (self._pattern is not None and self._pattern.search(key) is not None)
        with self._lock:
            if len(self._cache) >= self._cache_size:
                self.cache_evictions += len(self._cache)
                self._cache.clear()
            self._cache[raw_key] = secret
        return secret

    def redact_query(self, query: str) -> str:
        """Return ``query`` (no leading ``?``) with secret values replaced; keys and order kept."""
        if not query:
            return query
        parts = query.split("&")
        changed = False
        for i, part in enumerate(parts):
            key, eq, value = part.partition("=")
            if eq and value and value != REDACTED and self(key):
                parts[i] = f"{key}={REDACTED}"
                changed = True
        return "&".join(parts) if changed else query

    def redact_url(self, url: str) -> str:
        """Redact user information and secret query values of a URL or request-target."""
        if "@" in url:
            url = _USERINFO_RE.sub(rf"\1{REDACTED}:{REDACTED}@", url, count=1)
        q = url.find("?")
        if q < 0:
            return url
        h = url.find("#", q)
        if h < 0:
            return url[: q + 1] + self.redact_query(url[q + 1 :])
        return url[: q + 1] + self.redact_query(url[q + 1 : h]) + url[h:]


class RedactionProcessor:
    """Replaces credentials in headers and query strings; see the module docstring."""

    def __init__(self, config: RedactionConfig | None = None) -> None:
        config = config or RedactionConfig.create_default_config()
        config.validate()
        self._headers = frozenset(ALWAYS_REDACTED_HEADERS) | frozenset(h.strip().lower() for h in config.extra_headers)
        self._watched = self._headers | _URL_HEADERS
        self._matcher = SecretKeyMatcher(
            keys=config.query_keys, pattern=config.query_key_pattern, cache_size=config.cache_size
        )
        self.errors = 0

    @property
    def matcher(self) -> SecretKeyMatcher:
        return self._matcher

    def process(self, exchange: Exchange) -> Exchange:
        try:
            return self._process(exchange)
        except Exception:  # never let odd input through unredacted, never raise
            self.errors += 1
            return self._fallback(exchange)

    def _process(self, exchange: Exchange) -> Exchange:
        request = exchange.request
        target = request.target
        new_target = self._matcher.redact_url(target) if ("?" in target or "@" in target) else target
        req_headers = self._redact_headers(request.headers)
        req_trailers = self._redact_headers(request.trailers)
        if new_target != target or req_headers is not None or req_trailers is not None:
            request = dataclasses.replace(
                request,
                target=new_target,
                headers=request.headers if req_headers is None else req_headers,
                trailers=request.trailers if req_trailers is None else req_trailers,
            )
        response = exchange.response
        if response is not None:
            resp_headers = self._redact_headers(response.headers)
            resp_trailers = self._redact_headers(response.trailers)
            if resp_headers is not None or resp_trailers is not None:
                response = dataclasses.replace(
                    response,
                    headers=response.headers if resp_headers is None else resp_headers,
                    trailers=response.trailers if resp_trailers is None else resp_trailers,
                )
        if request is exchange.request and response is exchange.response:
            return exchange
        return dataclasses.replace(exchange, request=request, response=response)

    def _redact_headers(self, headers: Headers) -> Headers | None:
        """New headers tuple, or None when nothing had to change (the common case)."""
        watched = self._watched
        for name, _ in headers:
            if name in watched:
                break
        else:
            return None
        out = []
        changed = False
        for name, value in headers:
            if name in self._headers:
                if value != REDACTED:
                    value = REDACTED
                    changed = True
            elif name in _URL_HEADERS:
                new = self._matcher.redact_url(value)
                if new != value:
                    value = new
                    changed = True
            out.append((name, value))
        return tuple(out) if changed else None

    def _fallback(self, exchange: Exchange) -> Exchange:
        def scrub(headers: Headers) -> Headers:
            try:
                return tuple(
                    (name, REDACTED if name in self._watched else value) for name, value in headers
                )
            except Exception:
                return ()

        try:
            request = exchange.request
            target = str(request.target).split("?", 1)[0].split("#", 1)[0]
            if "@" in target:
                target = _USERINFO_RE.sub(rf"\1{REDACTED}:{REDACTED}@", target, count=1)
            request = dataclasses.replace(
                request, target=target, headers=scrub(request.headers), trailers=scrub(request.trailers)
            )
            response = exchange.response
            if response is not None:
                response = dataclasses.replace(
                    response, headers=scrub(response.headers), trailers=scrub(response.trailers)
                )
            return dataclasses.replace(exchange, request=request, response=response)
        except Exception:
            return exchange
