"""The gateway's settings: frozen, typed objects, their defaults, and the handler registry.

``gateway/config.py`` builds them from the YAML routing table (and the
environment); everything else reads them. Secrets are masked in every ``repr``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from limits import RateLimitItem, parse_many

from gateway.mapping import Expression, Template, compile_template

# In a checkout: config/gateway.yaml. In an installed wheel the same file ships
# as gateway/default_config.yaml (pyproject force-include).
_REPO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "gateway.yaml"
DEFAULT_CONFIG_PATH = (
    _REPO_CONFIG if _REPO_CONFIG.is_file() else Path(__file__).resolve().parent / "default_config.yaml"
)
CONFIG_ENV = "GATEWAY_CONFIG"
CHAT_URL_ENV = "CHAT_API_URL"
CHAT_PATH = "/api/chat"

DEFAULT_MAX_BODY_BYTES = 64 * 1024
# The largest default body (64 KiB) arrives in about 8 s at 64 kbit/s; a client slower than that is cut off.
DEFAULT_BODY_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_TOTAL_TIMEOUT = 30.0
DEFAULT_CONNECT_RETRIES = 2
DEFAULT_RETRY_BACKOFF = 0.05
DEFAULT_BREAKER_FAILURES = 5
DEFAULT_BREAKER_COOLDOWN = 30.0
DEFAULT_SSE_PING_INTERVAL = 15.0
STREAM_FORMATS = ("sse", "ndjson")
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_KEEPALIVE_EXPIRY = 30.0
DEFAULT_PROBE_TIMEOUT = 1.0
DEFAULT_PROBE_CACHE = 5.0
DEFAULT_MAX_MESSAGE_CHARS = 4000
DEFAULT_MAX_HISTORY = 50
DEFAULT_MAX_HISTORY_CONTENT_CHARS = 8000
DEFAULT_MAX_SESSION_ID_CHARS = 128
DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024
DEFAULT_STORAGE_TIMEOUT_DB = 5.0
DEFAULT_SESSION_STORE_TIMEOUT = 0.5
LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")
RATE_LIMIT_KEYS = ("ip", "credential", "session")
MIN_KEY_CHARS = 16
DEFAULT_DATABASE_URL = "sqlite:///data/gateway.db"
DATABASE_URL_ENV = "DATABASE_URL"
CONSOLE_ENV = "GATEWAY_CONSOLE"
CONSOLE_SESSION_RATE_LIMIT = "10/minute"  # POST /console/session, per client IP (the token route's rate)
DEFAULT_TRUSTED_PROXIES = ("127.0.0.1/32", "::1/128")
DEFAULT_METRICS_NETWORKS = ("127.0.0.1/32", "::1/128")
DEFAULT_DRAIN_DELAY = 0.0
DEFAULT_DRAIN_TIMEOUT = 30.0
CLIENT_IP_HEADERS = ("x-forwarded-for", "forwarded")
DEFAULT_STORAGE_TIMEOUT = 1.0
STORAGE_ERROR_MODES = ("open", "closed")
RATE_LIMIT_STORAGE_SCHEMES = ("memory", "redis", "rediss", "redis+sentinel", "redis+cluster", "memcached")
AVATAR_PROVIDERS = ("local", "liveavatar", "heygen")
AVATAR_BASE_URLS = {"liveavatar": "https://api.liveavatar.com", "heygen": "https://api.heygen.com"}
LIVEAVATAR_MODES = ("FULL", "LITE")
DEFAULT_SESSION_TTL = 300.0
DEFAULT_MAX_CONCURRENT_SESSIONS = 3
DEFAULT_AVATAR_TIMEOUTS = (2.0, 10.0)
DEFAULT_REAP_INTERVAL = 5.0
MIN_SIGNING_SECRET_CHARS = 32
STT_PROVIDERS = ("embedded", "deepgram", "assemblyai", "openai")
STT_BASE_URLS = {
    "deepgram": "https://api.deepgram.com",
    "assemblyai": "https://api.assemblyai.com",
    "openai": "https://api.openai.com",
}
STT_STREAMING_PROVIDERS = ("deepgram", "assemblyai")  # the ones that mint browser streaming tokens
STT_MODELS = {"deepgram": "nova-3", "assemblyai": "universal", "openai": "whisper-1"}
DEFAULT_STT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_STT_MAX_SECONDS = 30.0
DEFAULT_STT_TOKEN_TTL = 30.0
MAX_STT_TOKEN_TTL = 600.0  # AssemblyAI's ceiling; Deepgram grants are short-lived too
DEFAULT_STT_TIMEOUTS = (2.0, 30.0)
DEFAULT_STT_CONCURRENCY = 2
DEFAULT_STT_QUEUE = 16



@dataclass(frozen=True)
class HandlerSpec:
    """What a route's ``handler`` name stands for: where its endpoint lives
    (imported only when a route uses it) and its defaults."""

    endpoint: str  # "module:function", resolved by the app factory
    rate_limit: str
    limit_key: str = "ip"
    methods: tuple[str, ...] = ("POST",)
    uses_avatar: bool = False  # needs the avatar runtime (provider, session guard)
    uses_storage: bool = False  # needs the conversation store
    uses_stt: bool = False  # needs the speech-to-text runtime
    cross_origin: bool = False  # browsers on server.cors_origins may call it (never token/admin routes)


# The one handler registry: config validates names against it, the app imports from it.
HANDLERS: Mapping[str, HandlerSpec] = {
    "chat": HandlerSpec("gateway.chat:chat", "60/minute", cross_origin=True),
    # The token route is for server-side callers: count per credential, not per IP.
    "token": HandlerSpec("gateway.tokens:get_access_token", "10/minute", "credential", uses_avatar=True),
    "health": HandlerSpec("gateway.health:health", "100/minute", methods=("GET",), cross_origin=True),
    "conversations": HandlerSpec(
        "gateway.conversations:log_conversation", "60/minute", uses_storage=True, cross_origin=True
    ),
    # A browser ends its own session with its chatToken.
    "session_end": HandlerSpec("gateway.tokens:end_session", "60/minute", uses_avatar=True, cross_origin=True),
    # Billable: counted per session (the chatToken's, or the caller's ?sessionId=). A browser
    # posts its recording to transcribe; stt_token, like the avatar token route, stays same-origin.
    "transcribe": HandlerSpec(
        "gateway.transcribe:transcribe", "20/minute", "session", uses_stt=True, cross_origin=True
    ),
    "stt_token": HandlerSpec("gateway.transcribe:stt_token", "10/minute", "session", uses_stt=True),
}

class Secret(str):
    """A string whose repr never shows its value (header values, keys)."""

    def __repr__(self) -> str:
        return "Secret('**********')"


class SecretURL(str):
    """A URL that may carry a password (redis://:pw@host, postgresql://u:pw@host): its repr hides it."""

    def __repr__(self) -> str:
        return repr(redact_url(str(self)))


@dataclass(frozen=True)
class Timeouts:
    """Deadlines of one upstream exchange (gateway/upstream.py). ``first_byte`` (request
    sent to the first byte of the answer's body) and ``idle`` (the longest gap between
    two pieces of it) are bounded by ``total`` alone when None."""

    connect: float = DEFAULT_CONNECT_TIMEOUT
    total: float = DEFAULT_TOTAL_TIMEOUT
    first_byte: float | None = None
    idle: float | None = None


@dataclass(frozen=True)
class Retries:
    """Retries of a connection that could not be established (nothing was sent)."""

    attempts: int = DEFAULT_CONNECT_RETRIES  # retries after the first try; 0 = none
    backoff: float = DEFAULT_RETRY_BACKOFF  # base of the jittered exponential backoff


@dataclass(frozen=True)
class BreakerSettings:
    """The upstream's circuit breaker (gateway/breaker.py)."""

    failures: int = DEFAULT_BREAKER_FAILURES  # consecutive failures that open it
    cooldown: float = DEFAULT_BREAKER_COOLDOWN  # open this long before one probe request


@dataclass(frozen=True)
class Upstream:
    url: str
    timeouts: Timeouts = field(default_factory=Timeouts)
    headers: Mapping[str, Secret] = field(default_factory=dict)
    retries: Retries = field(default_factory=Retries)
    breaker: BreakerSettings | None = field(default_factory=BreakerSettings)  # None: no breaker


@dataclass(frozen=True)
class ResponseMapping:
    """JMESPath expressions (compiled at load) for the answer text and the sources; see gateway/mapping.py.
    ``sources`` is None when the backend never returns any."""

    response: Expression = field(default_factory=lambda: Expression("response"))
    sources: Expression | None = field(default_factory=lambda: Expression("sources"))
    source_title: Expression = field(default_factory=lambda: Expression("title"))
    source_url: Expression = field(default_factory=lambda: Expression("url"))


@dataclass(frozen=True)
class StreamMapping:
    """How the backend streams when the client asked for a stream (``$stream`` is true):
    ``sse`` (OpenAI-compatible ``data:`` events ending ``data: [DONE]``) or ``ndjson``
    (one JSON object a line, the last one ``done``), and the expressions applied to each chunk."""

    format: str
    delta: Expression
    sources: Expression | None = None
    done: Expression | None = None  # a chunk where this is true ends the stream (ndjson: ``done``)


DEFAULT_REQUEST_MAPPING: tuple[tuple[str, Any], ...] = (
    ("message", "$message"),
    ("sessionId", "$sessionId"),
    ("context", "$context"),
)


@dataclass(frozen=True)
class ChatMapping:
    # The request template as declared: (backend field path, value) pairs, in order.
    request: tuple[tuple[str, Any], ...] = DEFAULT_REQUEST_MAPPING
    response: ResponseMapping = field(default_factory=ResponseMapping)
    stream: StreamMapping | None = None  # None: the backend never streams (one delta)
    # ``request`` compiled (gateway/mapping.py); built from ``request`` when not given.
    template: Template | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.template is None:
            object.__setattr__(self, "template", compile_template(dict(self.request), "mapping.request"))


@dataclass(frozen=True)
class ChatLimits:
    max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS
    max_history: int = DEFAULT_MAX_HISTORY
    max_history_content_chars: int = DEFAULT_MAX_HISTORY_CONTENT_CHARS
    max_session_id_chars: int = DEFAULT_MAX_SESSION_ID_CHARS


@dataclass(frozen=True)
class RateLimitRule:
    items: tuple[RateLimitItem, ...]
    key: str = "ip"
    text: str = ""


@dataclass(frozen=True)
class Route:
    path: str
    handler: str
    methods: tuple[str, ...]
    rate_limits: tuple[RateLimitRule, ...] = ()
    upstream: Upstream | None = None
    mapping: ChatMapping = field(default_factory=ChatMapping)
    limits: ChatLimits = field(default_factory=ChatLimits)
    fallback_response: str | None = None


@dataclass(frozen=True)
class ServerSettings:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout: float = DEFAULT_BODY_TIMEOUT  # deadline for reading a whole request body (408)
    log_format: str = "auto"
    log_level: str = "info"
    log_message_content: bool = False
    # Peers whose X-Forwarded-For / Forwarded is believed (see gateway/proxies.py).
    trusted_proxies: tuple[str, ...] = DEFAULT_TRUSTED_PROXIES
    client_ip_header: str = "x-forwarded-for"
    # Origins whose browsers may call the cross-origin routes; none by default.
    cors_origins: tuple[str, ...] = ()
    # SIGTERM: health answers 503 "draining" for drain_delay while still serving, then the
    # gateway stops accepting and waits up to drain_timeout for requests in flight.
    drain_delay: float = DEFAULT_DRAIN_DELAY
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    # A ``: ping`` comment on an event stream after this long without an event.
    sse_ping_interval: float = DEFAULT_SSE_PING_INTERVAL


@dataclass(frozen=True)
class MetricsSettings:
    """``GET /metrics`` (gateway/metrics.py): from these networks, or with an admin key."""

    enabled: bool = True
    trusted_networks: tuple[str, ...] = DEFAULT_METRICS_NETWORKS


@dataclass(frozen=True)
class ClientSettings:
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY
    # An answer bigger than this, decoded, is not a chat or vendor answer: refused, never buffered.
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES


@dataclass(frozen=True)
class RateLimitSettings:
    storage_url: str = "memory://"
    on_storage_error: str = "open"
    storage_timeout: float = DEFAULT_STORAGE_TIMEOUT


@dataclass(frozen=True)
class HealthSettings:
    probe_timeout: float = DEFAULT_PROBE_TIMEOUT
    cache_seconds: float = DEFAULT_PROBE_CACHE
    stt_url: str | None = None
    avatar_url: str | None = None


@dataclass(frozen=True)
class StorageSettings:
    """Where conversation logs and chat turns go (gateway/storage)."""

    url: str = DEFAULT_DATABASE_URL
    record_chat_turns: bool = True
    turn_queue_size: int = 10_000
    retention_days: int | None = None
    redact_emails: bool = False
    redact_phones: bool = False
    pool_size: int = 20
    timeout: float = DEFAULT_STORAGE_TIMEOUT_DB
    max_messages: int = 500
    max_message_chars: int = 20_000
    max_metadata_bytes: int = 16_384

    def __repr__(self) -> str:
        return f"StorageSettings(url={redact_url(self.url)!r})"


@dataclass(frozen=True)
class AuthSettings:
    """Every configured credential (several of each, for rotation); see gateway/auth.py."""

    api_keys: tuple[Secret, ...] = ()  # the token route's server-side callers
    admin_keys: tuple[Secret, ...] = ()  # the admin read API; none = the API does not exist

    def __repr__(self) -> str:
        return f"AuthSettings(api_keys={len(self.api_keys)} configured, admin_keys={len(self.admin_keys)} configured)"


@dataclass(frozen=True)
class AvatarSettings:
    """The avatar provider and the session guard; see docs/tokens.md."""

    provider: str = "local"
    api_key: Secret | None = None
    base_url: str | None = None
    mode: str = "FULL"
    timeouts: Timeouts = field(default_factory=lambda: Timeouts(*DEFAULT_AVATAR_TIMEOUTS))
    session_ttl: float = DEFAULT_SESSION_TTL
    max_concurrent_sessions: int | None = DEFAULT_MAX_CONCURRENT_SESSIONS
    avatars: tuple[str, ...] = ()
    voices: tuple[str, ...] = ()
    require_session_token: bool = False
    signing_secret: Secret | None = None
    production: bool = False
    session_store: str | None = None
    session_store_timeout: float = DEFAULT_SESSION_STORE_TIMEOUT
    reap_interval: float = DEFAULT_REAP_INTERVAL


@dataclass(frozen=True)
class ConsoleSettings:
    """The browser console (gateway/console/): the playground at /console/ and the
    dashboard at /console/analytics. Off unless enabled; scripts/demo enables it.
    ``session_rate_limit``: how often one client may open an avatar session through
    ``POST /console/session`` (per IP unless the rule names another key)."""

    enabled: bool = False
    session_rate_limit: tuple[RateLimitRule, ...] = field(default_factory=lambda: (
        RateLimitRule(tuple(parse_many(CONSOLE_SESSION_RATE_LIMIT)), "ip", CONSOLE_SESSION_RATE_LIMIT),
    ))


@dataclass(frozen=True)
class SttSettings:
    """Speech-to-text: the provider, its key and the limits on audio; see README "Speech-to-text"."""

    provider: str = "embedded"
    api_key: Secret | None = None
    base_url: str | None = None
    streaming_url: str | None = None  # AssemblyAI's token host (streaming.assemblyai.com)
    model: str | None = None
    language: str = "en"
    timeouts: Timeouts = field(default_factory=lambda: Timeouts(*DEFAULT_STT_TIMEOUTS))
    phrases: tuple[str, ...] = ()
    phrases_files: tuple[str, ...] = ()  # files or directories of .md / .txt
    max_bytes: int = DEFAULT_STT_MAX_BYTES
    max_seconds: float = DEFAULT_STT_MAX_SECONDS
    token_ttl: float = DEFAULT_STT_TOKEN_TTL
    concurrency: int = DEFAULT_STT_CONCURRENCY  # embedded recognitions (processes) at once
    max_queue: int = DEFAULT_STT_QUEUE  # transcriptions waiting beyond that: 503

    def __repr__(self) -> str:
        key = "set" if self.api_key else "unset"
        return f"SttSettings(provider={self.provider!r}, api_key={key}, model={self.model!r})"


@dataclass(frozen=True)
class Settings:
    routes: tuple[Route, ...]
    server: ServerSettings = field(default_factory=ServerSettings)
    client: ClientSettings = field(default_factory=ClientSettings)
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    source: str = "<defaults>"
    storage: StorageSettings = field(default_factory=StorageSettings)
    avatar: AvatarSettings = field(default_factory=AvatarSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    stt: SttSettings = field(default_factory=SttSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

    def route_for(self, handler: str) -> Route | None:
        return next((r for r in self.routes if r.handler == handler), None)

    @property
    def uses_avatar(self) -> bool:
        return self.avatar.require_session_token or any(HANDLERS[r.handler].uses_avatar for r in self.routes)

    @property
    def uses_stt(self) -> bool:
        return any(HANDLERS[r.handler].uses_stt for r in self.routes)

    @property
    def uses_storage(self) -> bool:
        return (
            any(HANDLERS[r.handler].uses_storage for r in self.routes)
            or self.storage.record_chat_turns
            or bool(self.auth.admin_keys)
        )


def redact_url(url: str) -> str:
    """A URL without the credentials it may embed (user:pass@host), for errors and reprs."""
    return re.sub(r"//[^/@]*@", "//***@", url)
