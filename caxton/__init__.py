"""Caxton: a self-hosted multi-agent application server on trio."""

import os

# numpy's OpenBLAS runs every matrix product on a thread per core, which wait for each other
# by spinning. Caxton's products are small (a search scores at most the accelerator's rows
# below its HNSW threshold, or a few hundred candidates) and its cores are busy with requests:
# on two loaded cores a 2,300 x 384 product took 2.8 ms that way and 0.1 ms on one thread.
# Set before anything imports numpy (every caxton module imports this package first); an
# operator's own OPENBLAS_NUM_THREADS wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"

__all__ = ["__version__"]
