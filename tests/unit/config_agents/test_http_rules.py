"""caxton.agents.tools.http_rules: which host, port and address http_client may reach (pure)."""

from __future__ import annotations

import ipaddress

import pytest

from caxton.agents.tools.http_rules import (
    HostRule,
    UrlRefused,
    check_url,
    parse_rule,
    refused_address,
    request_headers,
)


@pytest.mark.parametrize(
    ("entry", "rule"),
    [
        ("api.example.com", HostRule(host="api.example.com", port=None, private_ok=False)),
        ("API.example.com:8443", HostRule(host="api.example.com", port=8443, private_ok=False)),
        ("*.example.com", HostRule(host="*.example.com", port=None, private_ok=False)),
        ("127.0.0.1:8080", HostRule(host="127.0.0.1", port=8080, private_ok=True)),
        ("[::1]:8080", HostRule(host="::1", port=8080, private_ok=True)),
        ("::1", HostRule(host="::1", port=None, private_ok=True)),
        ("localhost:11434", HostRule(host="localhost", port=11434, private_ok=True)),
        ("private:nas.lan:80", HostRule(host="nas.lan", port=80, private_ok=True)),
    ],
)
def test_entries_parse(entry: str, rule: HostRule) -> None:
    assert parse_rule(entry) == rule


@pytest.mark.parametrize("entry", ["", "host:", "host:http", "host:70000", "[::1]x"])
def test_malformed_entries_allow_nothing(entry: str) -> None:
    assert parse_rule(entry) is None


def test_the_port_is_the_entry_s_or_the_scheme_s_default() -> None:
    assert check_url("https://api.example.com/v1", ("api.example.com",)).port == 443
    assert check_url("http://api.example.com/v1", ("api.example.com",)).port == 80
    assert check_url("https://a.example.com:8443/", ("*.example.com:8443",)).host == "a.example.com"
    for url, entries in [
        ("https://api.example.com:22/", ("api.example.com",)),
        ("https://api.example.com/", ("api.example.com:8443",)),
        ("https://example.com/", ("*.example.com",)),
        ("https://evilexample.com/", ("*.example.com",)),
        ("ftp://api.example.com/", ("api.example.com",)),
        ("https://u:p@api.example.com/", ("api.example.com",)),
    ]:
        with pytest.raises(UrlRefused):
            check_url(url, entries)


def test_private_addresses_need_an_entry_that_names_them() -> None:
    public = check_url("https://api.example.com/", ("api.example.com",))
    for address in (
        "127.0.0.1",
        "10.1.2.3",
        "169.254.169.254",
        "::1",
        "::ffff:127.0.0.1",
        "fd00::1",
    ):
        assert refused_address(public, [ipaddress.ip_address(address)]) is not None
    assert refused_address(public, [ipaddress.ip_address("93.184.216.34")]) is None
    mixed = [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.1")]
    assert refused_address(public, mixed) is not None  # every address must pass
    literal = check_url("http://10.0.0.5:8080/", ("10.0.0.5:8080",))
    assert refused_address(literal, [ipaddress.ip_address("10.0.0.5")]) is None


def test_host_is_the_url_s_and_forbidden_headers_are_dropped() -> None:
    target = check_url("https://api.example.com:8443/x?q=1", ("api.example.com:8443",))
    headers = request_headers(
        {"host": "evil", "Authorization": "x", "Connection": "close", "Accept": "text/plain"},
        target,
    )
    assert headers == {"Accept": "text/plain", "Host": "api.example.com:8443"}
    assert target.url_for(ipaddress.ip_address("93.184.216.34")) == (
        "https://93.184.216.34:8443/x?q=1"
    )
