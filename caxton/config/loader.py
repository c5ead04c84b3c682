"""Load ``caxton.yaml``: YAML with positions, ``${VAR}`` interpolation, env and CLI overrides.

Precedence is CLI > ``CAXTON_*`` environment > file > defaults. All overrides are applied to
the raw mapping before it is structured, so a bad value from any source is reported the same
way: the key path, where the value came from (file line, variable or flag), and the fix.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, cast

import attrs
import cattrs
import yaml

from caxton.config.a2a_checks import a2a_problems
from caxton.config.model import Bytes, CaxtonConfig, Seconds
from caxton.config.sqlite_compat import apply_sqlite_compat
from caxton.errors import ConfigError
from caxton.units import parse_duration, parse_size

if typing.TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

KeyPath = tuple[str | int, ...]

#: Environment variables and the key each one sets (DESIGN §3).
ENV_OVERRIDES: dict[str, KeyPath] = {
    "CAXTON_HOST": ("server", "host"),
    "CAXTON_PORT": ("server", "port"),
    "CAXTON_DATA_DIR": ("server", "data_dir"),
    "CAXTON_AGENTS_DIR": ("server", "agents_dir"),
    "CAXTON_WORKERS": ("server", "workers"),
    "CAXTON_STORAGE_BACKEND": ("storage", "backend"),
    "CAXTON_DATABASE_URL": ("storage", "postgres", "url"),
    "CAXTON_MEMORY_BACKEND": ("memory", "backend"),
    "QDRANT_URL": ("memory", "qdrant_config", "url"),
    "CAXTON_LOG_LEVEL": ("logging", "level"),
    "CAXTON_LOG_FORMAT": ("logging", "format"),
    "CAXTON_METRICS_PORT": ("observability", "metrics_port"),
}

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_RUST_LEVELS = {"trace", "debug", "info", "warn", "error"}


@attrs.frozen(kw_only=True)
class LoadedConfig:
    """A structured configuration and what was noticed while loading it."""

    config: CaxtonConfig
    source: Path | None
    warnings: tuple[str, ...] = ()
    overrides: tuple[Override, ...] = ()


@attrs.frozen
class Override:
    """A value set outside the file: ``origin`` says where ("env CAXTON_PORT", "--port")."""

    path: KeyPath
    value: object
    origin: str


def dotted(path: KeyPath) -> str:
    """``("memory", "cleanup", 0)`` -> ``"memory.cleanup[0]"``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


class _Positions:
    """Where each key path was written in the YAML text (1-based lines)."""

    def __init__(self) -> None:
        self.lines: dict[KeyPath, int] = {}
        self.origins: dict[KeyPath, str] = {}

    def record(self, node: yaml.Node, path: KeyPath) -> None:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                self.record(value_node, (*path, key))
                self.lines[(*path, key)] = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.record(item, (*path, index))

    def where(self, path: KeyPath) -> str:
        """Name the place ``path`` came from, falling back to its closest written parent."""
        for end in range(len(path), 0, -1):
            prefix = path[:end]
            if prefix in self.origins:
                return f" (from {self.origins[prefix]})"
            if prefix in self.lines:
                return f" at line {self.lines[prefix]}"
        return ""


def load_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: list[Override] | None = None,
    text: str | None = None,
) -> LoadedConfig:
    """Load, merge and validate a configuration.

    Args:
        path: the YAML file; ``None`` means defaults (or ``CAXTON_CONFIG_PATH`` when set).
        environ: the environment to read (``os.environ`` by default).
        overrides: values from command-line flags; they win over everything.
        text: the file's text, when the caller already has it (``path`` names it).

    Returns:
        The structured config, with its source and any warnings.

    Raises:
        ConfigError: listing every problem found, each with its key path and place.
    """
    env = dict(os.environ if environ is None else environ)
    if path is None and env.get("CAXTON_CONFIG_PATH"):
        path = Path(env["CAXTON_CONFIG_PATH"])
    source = str(path) if path is not None else "<defaults>"
    positions = _Positions()
    raw: dict[str, Any] = {}
    if path is not None or text is not None:
        if text is None:
            assert path is not None
            text = _read_text(path)
        raw = _parse_yaml(text, source, positions)

    problems: list[str] = []
    warnings: list[str] = []
    raw = _interpolate(raw, (), env, positions, problems)
    for item in _env_overrides(env):
        _set(raw, item.path, item.value)
        positions.origins[item.path] = item.origin
    for item in overrides or []:
        _set(raw, item.path, item.value)
        positions.origins[item.path] = item.origin

    # Unknown keys are reported and dropped, so that the type errors of the remaining keys
    # are reported in the same run: every problem of a file at once.
    _check_keys(raw, CaxtonConfig, (), positions, problems)
    apply_sqlite_compat(raw, warnings, problems, positions.where)
    try:
        config = _converter.structure(raw, CaxtonConfig)
    except cattrs.BaseValidationError as exc:
        problems.extend(_type_problems(exc, positions))
        raise ConfigError(source, problems) from None
    if problems:
        raise ConfigError(source, problems)

    config = _finish(config, problems)
    if problems:
        raise ConfigError(source, problems)
    return LoadedConfig(
        config=config, source=path, warnings=tuple(warnings), overrides=tuple(overrides or ())
    )


def _read_text(path: Path) -> str:
    """The UTF-8 text of the configuration file ``path``.

    Raises:
        ConfigError: the file is missing, unreadable or not UTF-8.
    """
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [f"file not found: {path}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"cannot read {path}: {exc}"]) from None


@attrs.frozen(kw_only=True)
class ServerAddress:
    """Where a client finds the server: all a client command needs of a caxton.yaml."""

    host: str
    port: int
    tls: bool


#: The keys a client reads, with the type each must have.
_CLIENT_KEYS: tuple[tuple[KeyPath, type], ...] = (
    (("server", "host"), str),
    (("server", "port"), int),
    (("security", "tls", "enabled"), bool),
)


def load_server_address(path: Path, *, environ: Mapping[str, str] | None = None) -> ServerAddress:
    """Read only ``server.host``, ``server.port`` and ``security.tls.enabled`` of ``path``.

    A client command (``caxton health``, ``caxton agents list``) runs where the server's
    environment may not be, so a ``${VAR}`` or a mistake elsewhere in the file (say in
    ``logging.file``) must not stop it (issue #13). ``CAXTON_HOST``/``CAXTON_PORT`` override the
    file as they do for the server.

    Raises:
        ConfigError: the file cannot be read or parsed, or one of these three keys is wrong.
    """
    env = dict(os.environ if environ is None else environ)
    source = str(path)
    text = _read_text(path)
    positions = _Positions()
    raw = _parse_yaml(text, source, positions)
    defaults = CaxtonConfig()
    problems: list[str] = []
    values: dict[KeyPath, object] = {}
    overrides = {o.path: o.value for o in _env_overrides(env)}
    for key, kind in _CLIENT_KEYS:
        node: Any = raw
        for part in key:
            node = node.get(part) if isinstance(node, dict) else None
        value = _interpolate(node, key, env, positions, problems) if node is not None else None
        value = overrides.get(key, value)
        if isinstance(value, str) and kind is not str:
            value = scalar_from_text(value)
        if value is None:
            value = _default_at(defaults, key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            wanted = {str: "a string", int: "an integer", bool: "true or false"}[kind]
            problems.append(
                f"{dotted(key)}{positions.where(key)}: must be {wanted}, got {_describe(value)}"
            )
        values[key] = value
    if problems:
        raise ConfigError(source, problems)
    return ServerAddress(
        host=str(values[("server", "host")]),
        port=cast("int", values[("server", "port")]),
        tls=bool(values[("security", "tls", "enabled")]),
    )


def _default_at(config: object, key: KeyPath) -> object:
    node = config
    for part in key:
        node = getattr(node, str(part))
    return node


def _parse_yaml(text: str, source: str, positions: _Positions) -> dict[str, Any]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown place"
        raise ConfigError(source, [f"YAML syntax error at {where}: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"YAML syntax error: {exc}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(source, [f"the top level must be a mapping of sections, got {kind}"])
    if node is not None:
        positions.record(node, ())
    return data


def _interpolate(
    value: Any, path: KeyPath, env: Mapping[str, str], positions: _Positions, problems: list[str]
) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, (*path, k), env, positions, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*path, i), env, positions, problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(
            f"{dotted(path)}{positions.where(path)}: environment variable {name} is not set; "
            f"set it, or write ${{{name}:-default}} to give a default"
        )
        return ""

    return _INTERPOLATION.sub(replace, value)


def _env_overrides(env: Mapping[str, str]) -> Iterator[Override]:
    for name, path in ENV_OVERRIDES.items():
        if env.get(name):
            yield Override(path, scalar_from_text(env[name]), f"env {name}")
    if not env.get("CAXTON_LOG_LEVEL") and env.get("RUST_LOG"):
        level = level_from_rust_log(env["RUST_LOG"])
        if level is not None:
            yield Override(("logging", "level"), level, "env RUST_LOG")


def scalar_from_text(text: str) -> object:
    """Read a flag or variable the way YAML reads a plain scalar ("8080" -> 8080)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, int | float | bool | str) else text


def level_from_rust_log(value: str) -> str | None:
    """Take the level from a ``RUST_LOG`` filter: ``info``, or ``caxton=debug,hyper=warn``."""
    fallback = None
    for directive in value.lower().split(","):
        target, _, level = directive.strip().rpartition("=")
        if level not in _RUST_LEVELS:
            continue
        if target == "caxton":
            return level
        if not target:
            fallback = level
    return fallback


def _set(raw: dict[str, Any], path: KeyPath, value: object) -> None:
    node = raw
    for part in path[:-1]:
        child = node.get(str(part))
        if not isinstance(child, dict):
            child = {}
            node[str(part)] = child
        node = child
    node[str(path[-1])] = value


def attrs_class(tp: object) -> type | None:
    """The attrs class inside ``tp`` (also through ``X | None``), if any."""
    if isinstance(tp, type) and attrs.has(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if isinstance(arg, type) and attrs.has(arg):
                return arg
    return None


def known_key_paths(cls: type = CaxtonConfig, prefix: KeyPath = ()) -> list[str]:
    """Every key path the file format accepts, in declaration order."""
    paths: list[str] = []
    hints = typing.get_type_hints(cls)
    for field in attrs.fields(cls):
        here = (*prefix, field.name)
        paths.append(dotted(here))
        nested = attrs_class(hints[field.name])
        if nested is not None:
            paths.extend(known_key_paths(nested, here))
    return paths


def _check_keys(
    raw: dict[str, Any], cls: type, path: KeyPath, positions: _Positions, problems: list[str]
) -> None:
    """Report (and drop) unknown keys with the closest valid key, and non-mapping sections."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in attrs.fields(cls)]
    for key, value in list(raw.items()):
        here = (*path, str(key))
        if key not in names:
            suggestion = _suggest(str(key), names, path)
            problems.append(f"unknown key {dotted(here)}{positions.where(here)}{suggestion}")
            del raw[key]
            continue
        nested = attrs_class(hints[str(key)])
        if nested is None or (value is None and _is_optional(hints[str(key)])):
            continue
        if not isinstance(value, dict):
            keys = ", ".join(f.name for f in attrs.fields(nested))
            problems.append(
                f"{dotted(here)}{positions.where(here)}: must be a section (a mapping of keys: "
                f"{keys}), got {_describe(value)}"
            )
            del raw[key]
            continue
        _check_keys(value, nested, here, positions, problems)


def _suggest(key: str, names: list[str], path: KeyPath) -> str:
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]}?"
    elsewhere = [p for p in known_key_paths() if p.rsplit(".", 1)[-1] == key]
    if elsewhere:
        return f"; {key} belongs under {elsewhere[0].rsplit('.', 1)[0]} ({elsewhere[0]})"
    where = dotted(path) or "the top level"
    return f"; valid keys in {where}: {', '.join(names)}"


def _is_optional(tp: object) -> bool:
    return type(None) in typing.get_args(tp)


def _describe(value: object) -> str:
    if value is None:
        return "nothing (null)"
    kinds = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}
    kinds.update({list: "a list", dict: "a mapping"})
    return f"{kinds.get(type(value), type(value).__name__)} {value!r}"[:120]


def _strict_int(value: object, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {_describe(value)}")
    return value


def _strict_float(value: object, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {_describe(value)}")
    return float(value)


def _strict_bool(value: object, _: type) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_describe(value)}")
    return value


def _strict_str(value: object, _: type) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_describe(value)}")
    return value


def _literal(value: object, tp: Any) -> object:
    allowed = typing.get_args(tp)
    if value not in allowed:
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ValueError(
            f"expected one of {', '.join(map(str, allowed))}, got {_describe(value)}{hint}"
        )
    return value


def _list_of_str(value: object, _: type) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ValueError(f"expected a list of strings, got {_describe(value)}")
    return [_strict_str(item, str) for item in value]


def _is_literal(tp: object) -> bool:
    origin: object = typing.get_origin(tp)
    return origin is Literal


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(float, _strict_float)
    converter.register_structure_hook(bool, _strict_bool)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook_func(lambda tp: tp == list[str], _list_of_str)
    converter.register_structure_hook(Seconds, lambda v, _: Seconds(parse_duration(v)))
    converter.register_structure_hook(Bytes, lambda v, _: Bytes(parse_size(v)))
    converter.register_structure_hook_func(_is_literal, _literal)
    return converter


_converter = _make_converter()


def _type_problems(exc: cattrs.BaseValidationError, positions: _Positions) -> Iterator[str]:
    for line in cattrs.transform_error(exc, path="$", format_exception=_format_exception):
        message, _, where = line.rpartition(" @ ")
        parts: list[str | int] = []
        for token in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]", where):
            parts.append(token[0] if token[0] else int(token[1]))
        path = tuple(parts)
        yield f"{dotted(path)}{positions.where(path)}: {message}"


def _format_exception(exc: BaseException, _tp: type | None) -> str:
    if isinstance(exc, KeyError):
        return "required key is missing"
    return str(exc)


def _storage_problems(config: CaxtonConfig) -> list[str]:
    """What is wrong with ``storage`` and ``server.workers``, each with its fix."""
    problems = []
    storage = config.storage
    postgres = storage.postgres
    workers = config.server.workers
    if not 1 <= workers <= 64:
        problems.append(f"server.workers: {workers} is not between 1 and 64")
    elif workers > 1 and storage.backend != "postgres":
        problems.append(
            f"server.workers: {workers} processes cannot share the embedded store (one "
            "process locks the DuckDB file); set storage.backend: postgres with "
            "storage.postgres.url, or run one worker"
        )
    if storage.backend == "postgres":
        if not postgres.url:
            problems.append(
                "storage.postgres.url: required with storage.backend: postgres; set it (or "
                "CAXTON_DATABASE_URL) to postgresql://user:password@host:5432/dbname"
            )
        elif not postgres.url.startswith(("postgresql://", "postgres://")):
            problems.append(
                "storage.postgres.url: must start with postgresql:// "
                "(postgresql://user:password@host:5432/dbname)"
            )
    for name, value, low in (
        ("storage.postgres.pool_size", postgres.pool_size, 1),
        ("storage.postgres.hnsw_ef_search", postgres.hnsw_ef_search, 1),
    ):
        if value < low:
            problems.append(f"{name}: must be at least {low}")
    for name, seconds in (
        ("storage.postgres.connect_timeout", postgres.connect_timeout),
        ("storage.postgres.statement_timeout", postgres.statement_timeout),
    ):
        if seconds <= 0:
            problems.append(f"{name}: must be more than 0s")
    return problems


def _finish(config: CaxtonConfig, problems: list[str]) -> CaxtonConfig:
    """Checks across keys, then make data_dir absolute so later chdirs cannot move it."""
    server = config.server
    for name, port in (
        ("server.port", server.port),
        ("observability.metrics_port", config.observability.metrics_port),
    ):
        if not 0 <= port <= 65535:
            problems.append(f"{name}: {port} is not a TCP port (0-65535)")
    tls = config.security.tls
    if tls.enabled and not (tls.cert_file and tls.key_file):
        problems.append("security.tls: enabled needs both cert_file and key_file")
    if config.memory.max_entities < 1:
        problems.append("memory.max_entities: must be at least 1")
    embedding = config.memory.embedding_config
    for key, count in (
        ("threads", embedding.threads),
        ("gathered_threads", embedding.gathered_threads),
        ("batch_size", embedding.batch_size),
    ):
        if count is not None and count < 1:
            problems.append(
                f"memory.embedding_config.{key}: must be at least 1, got {count}"
                + (" (leave it out for the default)" if key != "batch_size" else "")
            )
    problems.extend(_storage_problems(config))
    problems.extend(a2a_problems(config.a2a))
    data_dir = str(Path(server.data_dir).expanduser().absolute())
    return attrs.evolve(config, server=attrs.evolve(server, data_dir=data_dir))
