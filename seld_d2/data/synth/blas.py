"""Limit the threads of the OpenBLAS libraries numpy/scipy loaded (what ``threadpoolctl`` does,
without the dependency).

Scene synthesis runs thousands of tiny LAPACK/BLAS calls (32x32 eigendecompositions of the
visibilities, 32x32 mixing matrices). On a busy 2-core machine OpenBLAS's worker threads then
spin against each other: a batch of 900 ``eigh`` calls took 21 s with the default threads and
0.17 s with one. Single-threaded BLAS is also no slower for the large products used here.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads")
_GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads")


def _openblas_libraries() -> list[ctypes.CDLL]:
    """The OpenBLAS shared libraries loaded in this process (Linux; empty elsewhere)."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return []
    libs = []
    for p in paths:
        with contextlib.suppress(OSError):
            libs.append(ctypes.CDLL(p))
    return libs


def _call(lib: ctypes.CDLL, names: tuple[str, ...], *args):
    for name in names:
        fn = getattr(lib, name, None)
        if fn is not None:
            return fn(*args)
    return None


def get_blas_threads() -> list[int]:
    """Thread counts of the loaded OpenBLAS libraries."""
    return [n for lib in _openblas_libraries() if (n := _call(lib, _GETTERS)) is not None]


def set_blas_threads(n: int) -> list[int]:
    """Set every loaded OpenBLAS library to ``n`` threads; returns the previous counts."""
    previous = []
    for lib in _openblas_libraries():
        old = _call(lib, _GETTERS)
        if old is not None:
            previous.append(int(old))
            _call(lib, _SETTERS, ctypes.c_int(int(n)))
    return previous


@contextlib.contextmanager
def blas_threads(n: int = 1) -> Iterator[None]:
    """Run a block with ``n`` OpenBLAS threads, restoring the previous counts afterwards."""
    libs = _openblas_libraries()
    previous = [_call(lib, _GETTERS) for lib in libs]
    for lib in libs:
        _call(lib, _SETTERS, ctypes.c_int(int(n)))
    try:
        yield
    finally:
        for lib, old in zip(libs, previous, strict=True):
            if old is not None:
                _call(lib, _SETTERS, ctypes.c_int(int(old)))
