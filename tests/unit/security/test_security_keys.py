"""The key file: generation, hashing, parsing with line numbers, atomic rewrite."""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

import pytest

from caxton.security.errors import KeyFileError
from caxton.security.keys import (
    KeyEntry,
    KeyRing,
    generate_key,
    hash_key,
    parse_key_file,
    read_key_file,
    readable_by_others,
    write_key_file,
)
from caxton.security.roles import Role

if TYPE_CHECKING:
    from pathlib import Path

HASH = "sha256:" + "ab" * 32


def test_keys_are_256_bit_random_tokens_stored_as_sha256() -> None:
    one, two = generate_key(), generate_key()
    assert one != two
    assert one.startswith("cxk_")
    assert len(one) == 4 + 43  # 32 random bytes, base64url without padding
    digest = hash_key(one)
    assert digest.startswith("sha256:")
    assert len(digest) == 7 + 64
    assert hash_key(one) == digest
    assert hash_key(two) != digest


def test_parse_finds_keys_by_hash_and_keeps_revocations() -> None:
    key = generate_key()
    ring = parse_key_file(
        f"keys:\n  - name: ci\n    role: operator\n    hash: {hash_key(key)}\n"
        f"  - name: old\n    role: admin\n    hash: {HASH}\n    revoked: true\n",
        "keys.yaml",
    )
    entry = ring.lookup(key)
    assert entry is not None
    assert (entry.name, entry.role, entry.revoked, entry.line) == ("ci", Role.OPERATOR, False, 2)
    assert ring.lookup("cxk_something-else") is None
    assert ring.lookup("") is None
    old = ring.named("old")
    assert old is not None
    assert old.revoked
    assert [e.name for e in ring.active()] == ["ci"]


@pytest.mark.parametrize("text", ["", "keys:\n", "keys: []\n", "# only a comment\n"])
def test_empty_key_files_hold_no_keys(text: str) -> None:
    assert parse_key_file(text, "k.yaml").entries == ()


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("keys:\n  - name: a\n    role: boss\n    hash: " + HASH + "\n", 2, "unknown role 'boss'"),
        ("keys:\n  - name: a\n    role: user\n    hash: md5:abc\n", 2, "hash must be 'sha256:'"),
        ("keys:\n  - name: a\n    role: user\n", 2, "has no 'hash'"),
        (
            "keys:\n  - name: a\n    role: user\n    hash: " + HASH + "\n    colour: red\n",
            5,
            "unknown field 'colour'",
        ),
        (
            "keys:\n  - name: a\n    role: user\n    hash: " + HASH + "\n"
            "  - name: a\n    role: user\n    hash: sha256:" + "cd" * 32 + "\n",
            5,
            "used twice",
        ),
        (
            "keys:\n  - name: a\n    role: user\n    hash: " + HASH + "\n"
            "  - name: b\n    role: user\n    hash: " + HASH + "\n",
            5,
            "repeats another's hash",
        ),
        ("keys:\n  - name: a\n    role: user\n    hash: [" + HASH + "]\n", 4, "single value"),
        ("keys:\n  - name: 'has space'\n    role: user\n    hash: " + HASH + "\n", 2, "name"),
        ("keys:\n  - name: a\n    role: user\n   hash: x\n", 4, "not valid YAML"),
        ("users:\n  - a\n", 1, "unknown top-level key 'users'"),
        ("keys: everyone\n", 1, "must be a list"),
        ("- a\n- b\n", 1, "expected a mapping"),
        ("keys:\n  - just-a-string\n", 2, "each key is a mapping"),
        (
            "keys:\n  - name: a\n    role: user\n    hash: " + HASH + "\n    revoked: maybe\n",
            2,
            "revoked must be true or false",
        ),
    ],
)
def test_malformed_key_files_name_the_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(KeyFileError) as caught:
        parse_key_file(text, "/etc/caxton/api-keys.yaml")
    assert caught.value.line == line
    assert fragment in caught.value.message
    assert f"/etc/caxton/api-keys.yaml, line {line}" in caught.value.message


def test_write_is_atomic_owner_only_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "api-keys.yaml"
    ring = KeyRing(
        (
            KeyEntry(name="a", role=Role.ADMIN, hash=HASH, created="2026-01-01T00:00:00Z"),
            KeyEntry(name="r", role=Role.READONLY, hash="sha256:" + "0" * 64, revoked=True),
        )
    )
    write_key_file(path, ring)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert readable_by_others(path) is None
    again = read_key_file(path)
    assert [(e.name, e.role, e.hash, e.created, e.revoked) for e in again.entries] == [
        ("a", Role.ADMIN, HASH, "2026-01-01T00:00:00Z", False),
        ("r", Role.READONLY, "sha256:" + "0" * 64, None, True),
    ]
    assert "caxton keys" in path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["api-keys.yaml"]  # no temp file left


def test_world_readable_key_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("keys: []\n")
    path.chmod(0o644)
    warning = readable_by_others(path)
    assert warning is not None
    assert "0644" in warning
    assert f"chmod 600 {path}" in warning


def test_missing_key_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="caxton keys create"):
        read_key_file(tmp_path / "nope.yaml")
