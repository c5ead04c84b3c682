"""Files a command writes from a stream: never left half-written under their own name."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterator


@attrs.frozen
class PartialFile:
    """The temporary file beside a destination: ``file`` to write, ``path`` to check."""

    file: IO[bytes]
    path: Path

    def finish(self) -> None:
        """Flush the written bytes to disk and close the file (again: nothing)."""
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()


@contextlib.contextmanager
def replacing(destination: Path) -> Iterator[PartialFile]:
    """Write ``destination`` through a temporary file beside it, readable by its owner only.

    The body writes :attr:`PartialFile.file`, may :meth:`~PartialFile.finish` it and check
    :attr:`PartialFile.path`; when the body returns, the file is finished and renamed to
    ``destination``. When it raises, the temporary file is removed and ``destination`` is left
    as it was.
    """
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - renamed or removed below
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".partial", delete=False
    )
    partial = PartialFile(file=handle, path=Path(handle.name))
    try:
        with handle:
            yield partial
            partial.finish()
        partial.path.replace(destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.path.unlink()
        raise
