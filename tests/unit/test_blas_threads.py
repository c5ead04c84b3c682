"""Importing caxton keeps numpy's BLAS on one thread (see caxton/__init__.py for why)."""

from __future__ import annotations

import os
import subprocess
import sys

COUNT_THREADS = """
import os, sys
if sys.argv[1] == "caxton":
    import caxton
import numpy as np
matrix = np.ones((400, 400), dtype=np.float32)
matrix @ matrix
print(len(os.listdir("/proc/self/task")))
"""


def threads_after_a_product(first_import: str, env: dict[str, str]) -> int:
    done = subprocess.run(
        [sys.executable, "-c", COUNT_THREADS, first_import],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(done.stdout.strip())


def test_caxton_keeps_blas_on_one_thread_unless_the_operator_says_otherwise() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    assert threads_after_a_product("caxton", env) == 1
    if (os.cpu_count() or 1) > 1:
        # The same product without caxton first starts BLAS threads (what the test would miss).
        assert threads_after_a_product("numpy", env) > 1
        # An operator's own setting wins.
        assert threads_after_a_product("caxton", {**env, "OPENBLAS_NUM_THREADS": "2"}) == 2
