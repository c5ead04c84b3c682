"""The accelerator saved next to the DB file, so a restart does not rebuild or re-read it.

Three files beside ``<db>``:

* ``<db>.hnsw`` — the HNSW graph (usearch's own format);
* ``<db>.hnsw.mirror`` — the numpy mirror (:class:`caxton.memory.index.MirrorArrays`): the
  vectors as held (f16 from the graph's threshold on), the graph key, agent, type and scope
  of each row, then the names (their lengths, then one UTF-8 text), each part 8-byte aligned;
* ``<db>.hnsw.json`` — the sidecar: the format, shapes and tuning, the size and CRC-32 of
  both files, the agent and type tables, and the **content token** of the database the files
  were saved against (:meth:`caxton.memory.sql.MemorySQL.content_token`: a hash of every
  stored (entity, type, scope, agent, embedding) computed by the database itself, ~1 s at 1M
  rows without a row reaching Python).

A restart trusts the files only when the sidecar describes them (sizes, CRC-32s, format,
tuning for the current size) and its token equals the database's now; anything else (an old
format, a damaged or truncated file, a database written while the files were not saved, a
restored or edited database) is logged and the mirror is read from the database and the graph
rebuilt. The files are saved with writes held off (the token and the mirror describe the same
rows); the sidecar is removed first and written last, so an interrupted save leaves no sidecar.

At 1M rows of 384-d this is ~0.8 GB of mirror and ~1 GB of graph, loaded in a few seconds,
against ~11 s to read the embeddings out of DuckDB and an hour to rebuild the graph on two
cores.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np

from caxton.memory.hnsw import GRAPH_DTYPE, HnswGraph, params_for
from caxton.memory.index import MirrorArrays
from caxton.memory.layered import LayeredIndex

if TYPE_CHECKING:
    from pathlib import Path

    from numpy.typing import NDArray

LOGGER = logging.getLogger("caxton.memory")

#: 3: the mirror saved beside the graph, checked against the database's content token
FORMAT_VERSION = 3
_ALIGN = 8
_READ_CHUNK = 1 << 22
_VECTOR_DTYPES: dict[str, type[np.floating[Any]]] = {"f16": np.float16, "f32": np.float32}


def sidecar_path(path: Path) -> Path:
    """Where the JSON description of the files saved at ``path`` lives."""
    return path.with_name(path.name + ".json")


def mirror_path(path: Path) -> Path:
    """Where the mirror saved with the graph at ``path`` lives."""
    return path.with_name(path.name + ".mirror")


# --------------------------------------------------------------------------------- save


def save(index: LayeredIndex, path: Path, content: str) -> None:
    """Save ``index`` (its graph and mirror), which holds exactly what ``content`` describes.

    Raises:
        ValueError: the index has no graph.
        OSError: a file could not be written (the previous files may be gone; no sidecar
            describes a partial file).
    """
    graph = index.graph
    if graph is None:
        raise ValueError("only an index with a graph is saved")
    arrays, keys = index.content()
    side = sidecar_path(path)
    side.unlink(missing_ok=True)
    graph_partial = path.with_name(path.name + ".partial")
    mirror = mirror_path(path)
    mirror_partial = mirror.with_name(mirror.name + ".partial")
    try:
        graph.save(graph_partial)
        mirror_described = _write_mirror(arrays, keys, mirror_partial)
        described = {
            "format": FORMAT_VERSION,
            "dim": graph.dim,
            "rows": len(arrays.names),
            "content": content,
            "dtype": GRAPH_DTYPE,
            "connectivity": graph.params.connectivity,
            "expansion_add": graph.params.expansion_add,
            "graph": {"size": graph_partial.stat().st_size, "crc32": _file_crc(graph_partial)},
            "mirror": mirror_described,
            "agents": [[name, code] for name, code in arrays.agent_ids.items()],
            "types": [[name, code] for name, code in arrays.type_ids.items()],
        }
        os.replace(graph_partial, path)
        os.replace(mirror_partial, mirror)
    finally:
        graph_partial.unlink(missing_ok=True)
        mirror_partial.unlink(missing_ok=True)
    side_partial = side.with_name(side.name + ".partial")
    side_partial.write_text(json.dumps(described), encoding="utf-8")
    os.replace(side_partial, side)


def _write_mirror(arrays: MirrorArrays, keys: NDArray[np.uint64], path: Path) -> dict[str, Any]:
    vectors = np.ascontiguousarray(arrays.vectors)
    dtype = "f16" if vectors.dtype == np.float16 else "f32"
    lengths = np.fromiter((len(name) for name in arrays.names), np.int32, len(arrays.names))
    text = "".join(arrays.names).encode("utf-8")
    crc = 0
    size = 0
    with path.open("wb") as handle:
        for part in _parts(vectors, keys, arrays, lengths):
            data = np.ascontiguousarray(part).data.cast("B")
            handle.write(data)
            crc = zlib.crc32(data, crc)
            size += len(data)
            pad = bytes(-size % _ALIGN)
            handle.write(pad)
            crc = zlib.crc32(pad, crc)
            size += len(pad)
        handle.write(text)
        crc = zlib.crc32(text, crc)
        size += len(text)
        handle.flush()
        os.fsync(handle.fileno())
    return {"size": size, "crc32": crc, "vectors": dtype, "text_bytes": len(text)}


def _parts(
    vectors: NDArray[Any], keys: NDArray[np.uint64], arrays: MirrorArrays, lengths: NDArray[Any]
) -> tuple[NDArray[Any], ...]:
    """The mirror file's fixed-width parts, in file order (the names' text follows them)."""
    return (vectors, keys, arrays.agents, arrays.types, lengths, arrays.scopes)


# --------------------------------------------------------------------------------- load


def load(path: Path, dim: int, threshold: int | None, content: str) -> LayeredIndex | None:
    """The index saved at ``path`` if its sidecar says it holds exactly ``content``, else None.

    A missing, stale or damaged save is logged and gives None (the caller reads the database).
    """
    described = _trusted(path, dim, content, "search index", "reading the database")
    if described is None:
        return None
    try:
        arrays, keys = _read_mirror(mirror_path(path), described, dim)
        graph = _read_graph(path, dim, described)
        index = LayeredIndex(dim, threshold=threshold)
        index.restore(arrays, keys, graph)
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
        LOGGER.warning("cannot load the saved search index %s (%s); reading the DB", path, exc)
        return None
    return index


def load_graph(path: Path, dim: int, content: str) -> HnswGraph | None:
    """Only the graph saved at ``path``, on the same terms as :func:`load` (for a mirror that
    was read from the database: the graph is valid for it when the content token matches).
    """
    described = _trusted(path, dim, content, "HNSW graph", "rebuilding it")
    if described is None:
        return None
    try:
        return _read_graph(path, dim, described)
    except (OSError, RuntimeError, ValueError) as exc:
        LOGGER.warning("cannot load the saved HNSW graph %s (%s); rebuilding it", path, exc)
        return None


def _trusted(path: Path, dim: int, content: str, what: str, instead: str) -> dict[str, Any] | None:
    """The sidecar of the files at ``path`` when they may be loaded (else logged: None)."""
    described = _described(path)
    if described is None:
        return None
    reason = problem(path, described, dim=dim, content=content, mirror_crc=False)
    if reason is not None:
        LOGGER.info("not using the saved %s %s: %s; %s", what, path, reason, instead)
        return None
    return described


def _read_graph(path: Path, dim: int, described: dict[str, Any]) -> HnswGraph:
    graph = HnswGraph(dim, params_for(described["rows"]))
    graph.load(path)
    return graph


def _described(path: Path) -> dict[str, Any] | None:
    side = sidecar_path(path)
    try:
        described = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        LOGGER.warning("ignoring the unreadable search index sidecar %s: %s", side, exc)
        return None
    if not isinstance(described, dict):
        LOGGER.warning("ignoring the search index sidecar %s: not a JSON object", side)
        return None
    return described


def problem(
    path: Path,
    described: dict[str, Any],
    *,
    dim: int | None,
    content: str | None,
    mirror_crc: bool = True,
) -> str | None:
    """Why the files saved at ``path`` cannot be trusted (None: they can).

    ``dim`` and ``content`` are checked when given (``caxton verify`` may know neither);
    ``mirror_crc=False`` leaves the mirror's CRC-32 to the caller that reads it anyway.
    """
    rows = described.get("rows")
    if described.get("format") != FORMAT_VERSION:
        return f"format {described.get('format')!r}, this version writes {FORMAT_VERSION}"
    if not isinstance(rows, int) or rows < 0:
        return "no row count"
    params = params_for(rows)
    expected: dict[str, object] = {
        "dtype": GRAPH_DTYPE,
        "connectivity": params.connectivity,
        "expansion_add": params.expansion_add,
    }
    if dim is not None:
        expected["dim"] = dim
    for field, value in expected.items():
        if described.get(field) != value:
            return f"saved with {field} {described.get(field)!r}, now {value!r}"
    if content is not None and described.get("content") != content:
        return "the database has changed since it was saved"
    for file, part in ((path, "graph"), (mirror_path(path), "mirror")):
        told = described.get(part)
        if not isinstance(told, dict):
            return f"the sidecar does not describe the {part} file"
        try:
            size = file.stat().st_size
        except OSError as exc:
            return f"{file}: {exc.strerror or exc}"
        if size != told.get("size"):
            return f"{file} has {size} bytes, the sidecar says {told.get('size')}"
        if (part == "graph" or mirror_crc) and _file_crc(file) != told.get("crc32"):
            return f"{file} is damaged (its CRC-32 differs from the sidecar's)"
    return None


def _read_mirror(
    path: Path, described: dict[str, Any], dim: int
) -> tuple[MirrorArrays, NDArray[np.uint64]]:
    rows: int = described["rows"]
    told = described["mirror"]
    buffer = bytearray(told["size"])
    with path.open("rb") as handle:
        if handle.readinto(buffer) != len(buffer) or handle.read(1):
            raise ValueError("the mirror file changed size while it was read")
    if zlib.crc32(buffer) != told["crc32"]:
        raise ValueError("the mirror file is damaged (its CRC-32 differs from the sidecar's)")
    dtype = _VECTOR_DTYPES[told["vectors"]]
    shapes: tuple[tuple[Any, tuple[int, ...]], ...] = (
        (dtype, (rows, dim)),
        (np.uint64, (rows,)),
        (np.int32, (rows,)),
        (np.int32, (rows,)),
        (np.int32, (rows,)),
        (np.int8, (rows,)),
    )
    parts: list[NDArray[Any]] = []
    offset = 0
    for part_dtype, shape in shapes:
        count = int(np.prod(shape))
        part = np.frombuffer(buffer, dtype=part_dtype, count=count, offset=offset)
        parts.append(part.reshape(shape))
        offset += part.nbytes + (-part.nbytes % _ALIGN)
    vectors, keys, agents, types, lengths, scopes = parts
    text = str(memoryview(buffer)[offset:], "utf-8")
    if len(buffer) - offset != told["text_bytes"] or int(lengths.sum()) != len(text):
        raise ValueError("the names do not fill the mirror file")
    if rows and (int(scopes.min()) < 0 or int(scopes.max()) > 2):
        raise ValueError("a scope code out of range")
    ends = np.cumsum(lengths, dtype=np.int64)
    names = [text[a:b] for a, b in zip((ends - lengths).tolist(), ends.tolist(), strict=True)]
    agent_ids: dict[str | None, int] = {name: int(code) for name, code in described["agents"]}
    type_ids: dict[str, int] = {str(name): int(code) for name, code in described["types"]}
    arrays = MirrorArrays(
        names=names,
        vectors=vectors,
        scopes=scopes,
        agents=agents,
        types=types,
        agent_ids=agent_ids,
        type_ids=type_ids,
    )
    return arrays, keys


def _file_crc(path: Path) -> int:
    crc = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc
