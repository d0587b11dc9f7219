"""The avatar: and auth: config sections: defaults, production checks, errors with key paths."""

from __future__ import annotations

import pytest

from gateway.config import parse_settings
from gateway.errors import ConfigError
from gateway.settings import AvatarSettings, Secret
from tests.tokens_support import KEY_A, KEY_B, token_settings


def test_defaults() -> None:
    settings = parse_settings("routes: []", env={})
    assert settings.avatar == AvatarSettings()
    assert settings.avatar.provider == "local" and settings.avatar.session_ttl == 300
    assert settings.avatar.max_concurrent_sessions == 3 and settings.avatar.require_session_token is False
    assert settings.auth.api_keys == ()


def test_full_section() -> None:
    settings = token_settings(
        {"provider": "liveavatar", "api_key": "${LIVEAVATAR_API_KEY}", "session_ttl": "10m",
         "max_concurrent_sessions": 100, "avatars": ["a1"], "voices": ["v1", "v2"], "mode": "LITE",
         "timeouts": {"connect": "1s", "total": "5s"}, "session_store": "redis://127.0.0.1:6379/1",
         "reap_interval": "2s", "production": True}
    )
    a = settings.avatar
    assert (a.provider, a.session_ttl, a.max_concurrent_sessions, a.mode) == ("liveavatar", 600, 100, "LITE")
    assert (a.avatars, a.voices, a.session_store, a.reap_interval) == (("a1",), ("v1", "v2"),
                                                                        "redis://127.0.0.1:6379/1", 2)
    assert (a.timeouts.connect, a.timeouts.total) == (1, 5)
    assert isinstance(a.api_key, Secret)
    assert settings.auth.api_keys == (KEY_A, KEY_B) and all(isinstance(k, Secret) for k in settings.auth.api_keys)


def test_cap_can_be_turned_off() -> None:
    assert token_settings({"max_concurrent_sessions": "off"}).avatar.max_concurrent_sessions is None


@pytest.mark.parametrize(
    ("avatar", "top", "expected"),
    [
        pytest.param({"production": True, "signing_secret": "${UNSET:-}"}, {},
                     "avatar.signing_secret: required when avatar.production is true (set GATEWAY_SIGNING_SECRET)",
                     id="production-without-secret"),
        pytest.param({"production": True}, {"auth": {"api_keys": "${UNSET:-}"}},
                     "auth.api_keys: required when avatar.production is true (set GATEWAY_API_KEYS)",
                     id="production-without-keys"),
        pytest.param({"provider": "did"}, {}, "avatar.provider: 'did' is not one of: local, liveavatar, heygen",
                     id="provider"),
        pytest.param({"session_ttl": "soon"}, {}, "avatar.session_ttl: 'soon' is not a duration like '30s' or '500ms'",
                     id="ttl"),
        pytest.param({"max_concurrent_sessions": 0}, {}, "avatar.max_concurrent_sessions: 0 is not a positive integer",
                     id="cap-zero"),
        pytest.param({"session_store": "mongodb://x"}, {},
                     "avatar.session_store: 'mongodb://x' is not a memory:// or redis:// URL", id="store"),
        pytest.param({"session_store": "mysql://user:pw@h/0"}, {},
                     "avatar.session_store: 'mysql://***@h/0' is not a memory:// or redis:// URL", id="store-redacted"),
        pytest.param({"avatars": "a1"}, {}, "avatar.avatars: 'a1' is not a list", id="avatars-not-list"),
        pytest.param({"mode": "full"}, {}, "avatar.mode: 'full' is not one of: FULL, LITE", id="mode"),
        pytest.param({"colour": "blue"}, {}, "avatar.colour: unknown key", id="unknown-key"),
        pytest.param({"timeouts": {"connect": "5s", "total": "1s"}}, {},
                     "avatar.timeouts: connect (5s) is longer than total (1s)", id="timeouts"),
    ],
)
def test_errors_name_the_key_path(avatar: dict, top: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        token_settings(avatar, **top)
    assert str(caught.value).startswith(expected)


def test_production_with_secret_and_keys_starts() -> None:
    assert token_settings({"production": True}).avatar.production is True
