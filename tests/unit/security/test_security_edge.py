"""Pure edge checks: client buckets, Host and Origin policies, JSON bounds, log escaping,
and when rate limits apply."""

from __future__ import annotations

import json
import logging

import pytest

from caxton.config import Override, load_config
from caxton.http.params import (
    MAX_JSON_DEPTH,
    MAX_JSON_KEYS,
    JsonTooComplex,
    check_json_shape,
    is_json_media_type,
    parse_json,
)
from caxton.logs import TextFormatter, escape_control
from caxton.security.cors import CorsPolicy
from caxton.security.edge import HostPolicy, origin_refusal
from caxton.security.gate import SecurityGate
from caxton.security.ratelimit import client_bucket, is_loopback_address


def _config(**values: object) -> object:
    overrides = [Override(tuple(k.split("__")), v, "test") for k, v in values.items()]
    return load_config(None, environ={}, overrides=overrides).config


@pytest.mark.parametrize(
    ("address", "bucket"),
    [
        ("192.0.2.7", "ip:192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "ip:2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "ip:2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "ip:2001:db8:1:3::/64"),
        ("::ffff:192.0.2.7", "ip:192.0.2.7"),
        ("fe80::1%eth0", "ip:fe80::/64"),
        (None, "ip:unknown"),
        ("unix-socket", "ip:unix-socket"),
    ],
)
def test_ipv6_clients_share_a_bucket_per_64(address: str | None, bucket: str) -> None:
    assert client_bucket(address) == bucket


def test_loopback_addresses() -> None:
    assert all(map(is_loopback_address, ["127.0.0.1", "127.8.9.1", "::1", "::ffff:127.0.0.1"]))
    assert not any(map(is_loopback_address, ["10.0.0.1", "2001:db8::1", None, "localhost"]))


def test_rate_limits_spare_loopback_only_by_default_without_authentication() -> None:
    default = SecurityGate(_config())  # type: ignore[arg-type]
    assert default.limits("192.0.2.7")
    assert default.limits("2001:db8::1")
    assert not default.limits("127.0.0.1")
    assert not default.limits("::1")
    explicit = SecurityGate(_config(security__rate_limiting__enabled=True))  # type: ignore[arg-type]
    assert explicit.limits("127.0.0.1")
    off = SecurityGate(_config(security__rate_limiting__enabled=False))  # type: ignore[arg-type]
    assert not off.limits("192.0.2.7")
    assert off.summary()["rate_limiting"] is False


def test_host_policy() -> None:
    policy = HostPolicy.from_config(_config(server__allowed_hosts=["Caxton.Internal"]))  # type: ignore[arg-type]
    for host in ("localhost", "LOCALHOST:8080", "127.0.0.1", "127.0.0.2:1", "[::1]:8080", "::1"):
        assert policy.allows(host), host
    assert policy.allows("caxton.internal:443")
    assert policy.allows(None)
    for host in ("evil.example", "127.0.0.1.evil.example", "localhost.evil.example", "[::2]", ""):
        assert not policy.allows(host), host
    bound = HostPolicy.from_config(_config(server__host="10.0.0.5"))  # type: ignore[arg-type]
    assert bound.allows("10.0.0.5:8080")
    assert not HostPolicy.from_config(_config(server__host="0.0.0.0")).allows("0.0.0.0")  # type: ignore[arg-type]


def test_origin_policy() -> None:
    off = CorsPolicy(origins=frozenset(), methods=("GET",), headers=(), max_age_s=1)
    assert origin_refusal(None, "127.0.0.1:8080", off, scheme="http") is None
    assert origin_refusal("http://127.0.0.1:8080", "127.0.0.1:8080", off, scheme="http") is None
    assert origin_refusal("http://localhost", "localhost:80", off, scheme="http") is None
    assert origin_refusal("https://x.example", "x.example", off, scheme="https") is None
    for origin in ("https://evil.example", "null", "http://127.0.0.1:9", "https://127.0.0.1:8080"):
        refusal = origin_refusal(origin, "127.0.0.1:8080", off, scheme="http")
        assert refusal is not None
        assert "security.cors.allowed_origins" in refusal
    on = CorsPolicy(
        origins=frozenset({"https://dash.example"}), methods=(), headers=(), max_age_s=1
    )
    assert origin_refusal("https://dash.example", "127.0.0.1:8080", on, scheme="http") is None


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth - 1):
        value = [value]
    return value


def test_json_bounds() -> None:
    check_json_shape(_nested(MAX_JSON_DEPTH))
    with pytest.raises(JsonTooComplex, match=f"deeper than {MAX_JSON_DEPTH}"):
        check_json_shape(_nested(MAX_JSON_DEPTH + 1))
    with pytest.raises(JsonTooComplex, match=f"deeper than {MAX_JSON_DEPTH}"):
        parse_json("[" * 100_000 + "]" * 100_000, "hint")
    check_json_shape({str(i): i for i in range(MAX_JSON_KEYS)})
    with pytest.raises(JsonTooComplex, match=str(MAX_JSON_KEYS)):
        parse_json(json.dumps({str(i): i for i in range(MAX_JSON_KEYS + 1)}), "hint")
    assert parse_json(b'{"a": [1, {"b": null}]}', "hint") == {"a": [1, {"b": None}]}


def test_json_media_types() -> None:
    assert is_json_media_type("application/json")
    assert is_json_media_type("Application/JSON; charset=utf-8")
    assert is_json_media_type("application/merge-patch+json")
    for other in (None, "", "text/plain", "application/x-www-form-urlencoded", "text/json"):
        assert not is_json_media_type(other)


def test_text_logs_cannot_be_forged() -> None:
    assert escape_control("a\nb\r\tc\x1b[2J\x00\u2028") == "a\\nb\\r\\tc\\x1b[2J\\x00\\u2028"
    record = logging.makeLogRecord(
        {
            "name": "caxton.http",
            "levelname": "INFO",
            "levelno": logging.INFO,
            "msg": "%s %s",
            "args": ("GET", "/x\n2026-01-01 00:00:00.000 ERROR   caxton forged"),
            "route": "/r\r\nX",
        }
    )
    line = TextFormatter().format(record)
    assert "\n" not in line
    assert "\r" not in line
    assert "/x\\n2026-01-01" in line
    assert "route=/r\\r\\nX" in line


def test_tracebacks_in_text_logs_stay_under_their_record() -> None:
    try:
        raise ValueError("boom\n2026-01-01 00:00:00.000 INFO    caxton forged")
    except ValueError as exc:
        record = logging.makeLogRecord(
            {
                "name": "caxton",
                "levelname": "ERROR",
                "msg": "failed",
                "exc_info": (ValueError, exc, exc.__traceback__),
            }
        )
    first, *rest = TextFormatter().format(record).split("\n")
    assert first.endswith("failed")
    assert rest
    assert all(line.startswith("    ") for line in rest)
