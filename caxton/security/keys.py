"""API keys: generation, hashing, and the key file (YAML ``keys: [{name, role, hash}]``).

Keys are 256-bit random tokens, so a plain SHA-256 of the key is the right thing to store
(DESIGN §11): no one can guess a preimage, and a lookup is one hash. The key file never holds
a key, only ``hash: "sha256:<hex>"``; a key is shown once, when ``caxton keys create`` makes it.
Optional entry fields: ``created`` (when it was made) and ``revoked: true`` (refused from then on).

The parser walks YAML nodes rather than loaded values so that every problem names its line.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
from typing import TYPE_CHECKING

import attrs
import yaml

from caxton.security.errors import KeyFileError
from caxton.security.roles import Role, parse_role, role_name

if TYPE_CHECKING:
    from pathlib import Path

KEY_PREFIX = "cxk_"
HASH_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_FIELDS = (
    "name",
    "role",
    "hash",
    "created",
    "revoked",
    "max_tokens_per_day",
    "max_cost_per_day",
)
_HEADER = (
    "# Caxton API keys. Managed by `caxton keys create|revoke`; only SHA-256 hashes are kept,\n"
    "# never the keys themselves. Keep this file readable by the server's user only (chmod 600).\n"
)


def generate_key() -> str:
    """A fresh key: ``cxk_`` and 256 random bits, URL-safe base64."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The stored form of ``key``: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


@attrs.frozen(kw_only=True)
class KeyEntry:
    name: str
    role: Role
    hash: str
    created: str | None = None
    revoked: bool = False
    line: int | None = None
    #: Daily budgets of this key's calls to LLMs (issue #18); None: no cap.
    max_tokens_per_day: int | None = None
    max_cost_per_day: float | None = None

    def as_yaml(self) -> dict[str, object]:
        data: dict[str, object] = {"name": self.name, "role": role_name(self.role)}
        data["hash"] = self.hash
        if self.created:
            data["created"] = self.created
        if self.revoked:
            data["revoked"] = True
        if self.max_tokens_per_day is not None:
            data["max_tokens_per_day"] = self.max_tokens_per_day
        if self.max_cost_per_day is not None:
            data["max_cost_per_day"] = self.max_cost_per_day
        return data


@attrs.frozen
class KeyRing:
    """The keys of one key file, looked up by hash."""

    entries: tuple[KeyEntry, ...] = ()
    _by_hash: dict[str, KeyEntry] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_hash", {entry.hash: entry for entry in self.entries})

    def lookup(self, key: str) -> KeyEntry | None:
        """The entry whose hash matches ``key`` (revoked entries included), or None."""
        return self._by_hash.get(hash_key(key))

    def named(self, name: str) -> KeyEntry | None:
        return next((entry for entry in self.entries if entry.name == name), None)

    def active(self) -> list[KeyEntry]:
        return [entry for entry in self.entries if not entry.revoked]


def parse_key_file(text: str, source: str) -> KeyRing:
    """Parse a key file; raise :class:`KeyFileError` naming the line of the first problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise KeyFileError(source, line, f"not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise KeyFileError(source, None, f"not valid YAML: {exc}") from None
    if root is None:
        return KeyRing(())
    if not isinstance(root, yaml.MappingNode):
        raise KeyFileError(source, _line(root), "expected a mapping with a `keys:` list")
    items: yaml.Node | None = None
    for key_node, value_node in root.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.value != "keys":
            raise KeyFileError(
                source,
                _line(key_node),
                f"unknown top-level key {_text(key_node)!r}; the file holds only `keys:`",
            )
        items = value_node
    if items is None or (isinstance(items, yaml.ScalarNode) and items.value in ("", "null", "~")):
        return KeyRing(())
    if not isinstance(items, yaml.SequenceNode):
        raise KeyFileError(source, _line(items), "`keys:` must be a list of {name, role, hash}")
    entries: list[KeyEntry] = []
    names: set[str] = set()
    hashes: set[str] = set()
    for item in items.value:
        entry = _entry(item, source)
        if entry.name in names:
            raise KeyFileError(source, entry.line, f"the name {entry.name!r} is used twice")
        if entry.hash in hashes:
            raise KeyFileError(source, entry.line, f"key {entry.name!r} repeats another's hash")
        names.add(entry.name)
        hashes.add(entry.hash)
        entries.append(entry)
    return KeyRing(tuple(entries))


def _entry(node: yaml.Node, source: str) -> KeyEntry:
    if not isinstance(node, yaml.MappingNode):
        raise KeyFileError(source, _line(node), "each key is a mapping {name, role, hash}")
    values: dict[str, str] = {}
    for key_node, value_node in node.value:
        field = _text(key_node)
        if field not in _FIELDS:
            raise KeyFileError(
                source, _line(key_node), f"unknown field {field!r}; known: {', '.join(_FIELDS)}"
            )
        if field in values:
            raise KeyFileError(source, _line(key_node), f"field {field!r} appears twice")
        if not isinstance(value_node, yaml.ScalarNode):
            raise KeyFileError(source, _line(value_node), f"{field} must be a single value")
        values[field] = str(value_node.value)
    line = _line(node)
    for required in ("name", "role", "hash"):
        if not values.get(required):
            raise KeyFileError(source, line, f"the key has no {required!r}")
    name = values["name"]
    if not NAME_PATTERN.match(name):
        raise KeyFileError(
            source, line, f"name {name!r}: use letters, digits and . _ @ - (at most 64)"
        )
    try:
        role = parse_role(values["role"])
    except ValueError as exc:
        raise KeyFileError(source, line, f"key {name!r}: {exc}") from None
    digest = values["hash"].strip().lower()
    if not HASH_PATTERN.match(digest):
        raise KeyFileError(source, line, f"key {name!r}: hash must be 'sha256:' and 64 hex digits")
    revoked_text = values.get("revoked", "false").strip().lower()
    if revoked_text not in ("true", "false", "yes", "no"):
        raise KeyFileError(source, line, f"key {name!r}: revoked must be true or false")
    budgets: dict[str, float] = {}
    for field in ("max_tokens_per_day", "max_cost_per_day"):
        if field in values:
            try:
                budgets[field] = float(values[field])
            except ValueError:
                budgets[field] = -1.0
            if budgets[field] < 0 or (field == "max_tokens_per_day" and budgets[field] < 1):
                raise KeyFileError(source, line, f"key {name!r}: {field} must be a positive number")
    tokens = budgets.get("max_tokens_per_day")
    return KeyEntry(
        name=name,
        role=role,
        hash=digest,
        created=values.get("created"),
        revoked=revoked_text in ("true", "yes"),
        line=line,
        max_tokens_per_day=None if tokens is None else int(tokens),
        max_cost_per_day=budgets.get("max_cost_per_day"),
    )


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _text(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else node.tag


def render_key_file(ring: KeyRing) -> str:
    """The text of a key file holding ``ring``."""
    body = yaml.safe_dump(
        {"keys": [entry.as_yaml() for entry in ring.entries]},
        sort_keys=False,
        default_flow_style=False,
    )
    return _HEADER + body


def read_key_file(path: Path) -> KeyRing:
    """Read and parse ``path`` (blocking; call through a worker thread from trio code)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(
            str(path),
            None,
            "does not exist; create a key with `caxton keys create --name admin --role admin`",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(str(path), None, f"cannot be read: {exc}") from None
    return parse_key_file(text, str(path))


def write_key_file(path: Path, ring: KeyRing) -> None:
    """Replace ``path`` atomically with ``ring``, readable by its owner only (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(render_key_file(ring))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def readable_by_others(path: Path) -> str | None:
    """A warning when ``path`` can be read by every user of the machine, else None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & stat.S_IROTH:
        return (
            f"{path} is readable by every user (mode {stat.S_IMODE(mode):04o}); "
            f"run `chmod 600 {path}`"
        )
    return None
