"""Thread limits of the BLAS libraries numpy and scipy loaded, through ``threadpoolctl``.

Scene synthesis, the metric's griddata and the classical maps run thousands of tiny LAPACK/BLAS
calls (32x32 eigendecompositions, 32x32 mixing matrices, barycentric transforms). On a busy
2-core machine OpenBLAS's worker threads then spin against each other: a batch of 900 ``eigh``
calls took 21 s with the default threads and 0.17 s with one. Single-threaded BLAS is also no
slower for the large products used here, and multi-threaded OpenBLAS rounds some products
differently, so the synthesised files pin one thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from threadpoolctl import threadpool_limits


@contextlib.contextmanager
def blas_threads(n: int = 1) -> Iterator[None]:
    """Run a block with ``n`` BLAS threads (every loaded OpenBLAS/MKL/BLIS), restoring the previous
    counts afterwards. OpenMP runtimes (torch's) are left alone; a process forked inside the block
    inherits the limit."""
    with threadpool_limits(limits=int(n), user_api="blas"):
        yield
