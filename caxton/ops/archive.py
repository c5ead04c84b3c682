"""The backup archive: a ``tar.gz`` with ``manifest.json``, ``checksums.sha256`` and the files.

Layout inside the archive::

    manifest.json          {format, version, created_at, sources, files: [{path, sha256, size}]}
    checksums.sha256       "<sha256>  <path>" per file (``sha256sum -c`` can read it)
    database/<db file>     the DuckDB file (plus its .wal, and the HNSW index files if present)
    deployed/...           agents deployed through the API (``data_dir/deployed``)
    agents/...             the files of agents_dir
    config/<file>          the configuration file the server was started with

The pure part (manifest values, checksum text, member checks) is separated from the blocking
file work (:func:`write_archive`, :func:`verify_archive`, :func:`extract_archive`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import posixpath
import tarfile
import zlib
from typing import IO, TYPE_CHECKING, Any

import attrs

from caxton import __version__
from caxton.ops.errors import ArchiveInvalid, BackupExists

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

FORMAT = 1
MANIFEST_NAME = "manifest.json"
CHECKSUMS_NAME = "checksums.sha256"
#: The top-level folders of an archive, one per kind of content.
AREAS = ("database", "deployed", "agents", "config")
_BLOCK = 1 << 20


@attrs.frozen(kw_only=True)
class FileEntry:
    """One file of the archive: its path inside the archive, SHA-256 and size."""

    path: str
    sha256: str
    size: int

    @property
    def area(self) -> str:
        return self.path.split("/", 1)[0]


@attrs.frozen(kw_only=True)
class Manifest:
    """What a backup holds and where it came from."""

    format: int
    version: str
    created_at: str
    files: tuple[FileEntry, ...]
    sources: dict[str, str | None] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "version": self.version,
            "created_at": self.created_at,
            "sources": dict(self.sources),
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files],
        }

    def in_area(self, area: str) -> tuple[FileEntry, ...]:
        return tuple(f for f in self.files if f.area == area)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def new_manifest(
    files: Iterable[FileEntry], *, sources: Mapping[str, str | None], now: dt.datetime
) -> Manifest:
    """A manifest for ``files`` (sorted by path), stamped ``now`` (UTC)."""
    return Manifest(
        format=FORMAT,
        version=__version__,
        created_at=now.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        files=tuple(sorted(files, key=lambda f: f.path)),
        sources=dict(sources),
    )


def parse_manifest(data: object) -> tuple[Manifest | None, list[str]]:
    """The manifest in ``data`` (parsed JSON), or None and the problems found."""
    if not isinstance(data, dict):
        return None, [f"{MANIFEST_NAME} is not a JSON object"]
    problems = []
    if data.get("format") != FORMAT:
        problems.append(
            f"{MANIFEST_NAME} has format {data.get('format')!r}; this Caxton reads format {FORMAT}"
        )
    files = data.get("files")
    if not isinstance(files, list):
        return None, [*problems, f"{MANIFEST_NAME} has no files list"]
    entries = []
    for index, item in enumerate(files):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("path"), str)
            or not isinstance(item.get("sha256"), str)
            or not isinstance(item.get("size"), int)
        ):
            problems.append(f"{MANIFEST_NAME}: files[{index}] needs path, sha256 and size")
            continue
        if not safe_member_name(item["path"]) or item["path"].split("/", 1)[0] not in AREAS:
            problems.append(f"{MANIFEST_NAME}: files[{index}] has an unsafe path {item['path']!r}")
            continue
        entries.append(FileEntry(path=item["path"], sha256=item["sha256"], size=item["size"]))
    if problems:
        return None, problems
    sources = data.get("sources") if isinstance(data.get("sources"), dict) else {}
    assert isinstance(sources, dict)
    return (
        Manifest(
            format=FORMAT,
            version=str(data.get("version", "unknown")),
            created_at=str(data.get("created_at", "unknown")),
            files=tuple(entries),
            sources={str(k): (None if v is None else str(v)) for k, v in sources.items()},
        ),
        [],
    )


def checksums_text(files: Iterable[FileEntry]) -> str:
    """``sha256sum`` format: one ``<hex>  <path>`` line per file."""
    return "".join(f"{f.sha256}  {f.path}\n" for f in files)


def parse_checksums(text: str) -> dict[str, str]:
    """Path -> hex digest from :func:`checksums_text` output (malformed lines are skipped)."""
    result = {}
    for line in text.splitlines():
        digest, sep, path = line.partition("  ")
        if sep and len(digest) == 64:
            result[path] = digest
    return result


def safe_member_name(name: str) -> bool:
    """A relative path without ``..``, backslashes or empty parts."""
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        return False
    parts = name.split("/")
    return all(part not in ("", ".", "..") for part in parts) and posixpath.normpath(name) == name


def check_contents(
    manifest: Manifest, digests: Mapping[str, tuple[str, int]], checksums: Mapping[str, str]
) -> list[str]:
    """Compare the manifest with what the archive holds.

    Args:
        manifest: the parsed manifest.
        digests: archive path -> (sha256, size) of every regular file read from the archive
            (the manifest and checksum files excluded).
        checksums: the parsed ``checksums.sha256``.

    Returns:
        One sentence per problem; empty when the archive is sound.
    """
    problems = []
    listed = {f.path for f in manifest.files}
    for entry in manifest.files:
        found = digests.get(entry.path)
        if found is None:
            problems.append(f"{entry.path} is listed in the manifest but missing")
            continue
        digest, size = found
        if size != entry.size:
            problems.append(f"{entry.path} has {size} bytes, the manifest says {entry.size}")
        elif digest != entry.sha256:
            problems.append(f"{entry.path} does not match its SHA-256 (the file is corrupted)")
        if checksums.get(entry.path) != entry.sha256:
            problems.append(f"{CHECKSUMS_NAME} disagrees with the manifest about {entry.path}")
    problems.extend(
        f"{path} is in the archive but not in the manifest"
        for path in sorted(set(digests) - listed)
    )
    return problems


# --------------------------------------------------------------------------------- file work


def sha256_stream(handle: IO[bytes]) -> tuple[str, int]:
    """(hex SHA-256, size) of what ``handle`` yields."""
    digest = hashlib.sha256()
    size = 0
    while block := handle.read(_BLOCK):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


def describe_tree(root: Path) -> list[FileEntry]:
    """A :class:`FileEntry` for every regular file under ``root`` (paths relative to it)."""
    entries = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        with path.open("rb") as handle:
            digest, size = sha256_stream(handle)
        entries.append(FileEntry(path=path.relative_to(root).as_posix(), sha256=digest, size=size))
    return entries


def write_archive(staging: Path, manifest: Manifest, destination: Path) -> None:
    """Pack ``staging`` (laid out as the manifest says) into ``destination``.

    The archive is written beside ``destination`` under a temporary name, synced, and renamed
    into place, so ``destination`` is never half-written; it is readable by its owner only.

    Raises:
        BackupExists: ``destination`` exists; it is never replaced.
    """
    destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.partial")
    try:
        # a new file, never a link someone planted under the temporary name
        partial.unlink(missing_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            _add_bytes(tar, MANIFEST_NAME, json.dumps(manifest.to_json(), indent=2).encode())
            _add_bytes(tar, CHECKSUMS_NAME, checksums_text(manifest.files).encode())
            for entry in manifest.files:
                tar.add(staging / entry.path, arcname=entry.path, recursive=False)
            tar.close()
            raw.flush()
            os.fsync(raw.fileno())
        try:
            # link, not rename: fails (instead of replacing) if anything exists there now
            os.link(partial, destination, follow_symlinks=False)
        except FileExistsError:
            raise BackupExists(
                f"{destination} already exists and a backup never replaces a file; choose a "
                "new name, or move the old file away",
                details={"path": str(destination)},
            ) from None
    finally:
        partial.unlink(missing_ok=True)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = int(dt.datetime.now(dt.UTC).timestamp())
    tar.addfile(info, io.BytesIO(data))


def verify_archive(path: Path) -> Manifest:
    """Read the whole archive once and check every file against the manifest.

    Returns:
        The manifest, when every file is present with its size and SHA-256.

    Raises:
        ArchiveInvalid: listing every problem (unreadable gzip/tar, no manifest, missing,
            extra or corrupted files, unsafe names).
    """
    if not path.is_file():
        raise ArchiveInvalid(path, ["the file does not exist"])
    digests: dict[str, tuple[str, int]] = {}
    manifest_data: bytes | None = None
    checksums_data: bytes | None = None
    problems: list[str] = []
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:
                if member.isdir():
                    continue
                if not member.isfile() or not safe_member_name(member.name):
                    problems.append(f"unexpected member {member.name!r} (not a plain file)")
                    continue
                handle = tar.extractfile(member)
                assert handle is not None
                if member.name in (MANIFEST_NAME, CHECKSUMS_NAME):
                    data = handle.read()
                    if member.name == MANIFEST_NAME:
                        manifest_data = data
                    else:
                        checksums_data = data
                    continue
                digests[member.name] = sha256_stream(handle)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ArchiveInvalid(path, [f"not a readable tar.gz archive: {exc}"]) from None
    if manifest_data is None:
        raise ArchiveInvalid(path, [*problems, f"it has no {MANIFEST_NAME}"])
    try:
        manifest, manifest_problems = parse_manifest(json.loads(manifest_data))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArchiveInvalid(path, [*problems, f"{MANIFEST_NAME} is not JSON: {exc}"]) from None
    problems.extend(manifest_problems)
    if manifest is None:
        raise ArchiveInvalid(path, problems)
    if checksums_data is None:
        problems.append(f"it has no {CHECKSUMS_NAME}")
        checksums: dict[str, str] = {f.path: f.sha256 for f in manifest.files}
    else:
        checksums = parse_checksums(checksums_data.decode("utf-8", errors="replace"))
    problems.extend(check_contents(manifest, digests, checksums))
    if problems:
        raise ArchiveInvalid(path, problems)
    return manifest


def extract_archive(path: Path, manifest: Manifest, target: Path) -> None:
    """Extract the files the manifest lists into ``target`` and check them again.

    Raises:
        ArchiveInvalid: the archive changed since it was verified.
    """
    wanted = {f.path: f for f in manifest.files}
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name in wanted]
            tar.extractall(target, members=members, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ArchiveInvalid(path, [f"extraction failed: {exc}"]) from None
    problems = []
    for entry in manifest.files:
        file = target / entry.path
        if not file.is_file():
            problems.append(f"{entry.path} was not extracted")
            continue
        with file.open("rb") as handle:
            digest, _ = sha256_stream(handle)
        if digest != entry.sha256:
            problems.append(f"{entry.path} changed since the archive was verified")
    if problems:
        raise ArchiveInvalid(path, problems)
