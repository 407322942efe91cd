import multiprocessing as mp

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from seld_d2.utils.threads import blas_threads


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def _other_threads() -> dict[str, int]:
    return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] != "blas"}


def _in_child(queue) -> None:
    queue.put(_blas_threads())


@pytest.fixture
def loaded_blas() -> list[int]:
    np.linalg.eigh(np.eye(4))  # numpy's OpenBLAS is loaded; the counts before the test
    before = _blas_threads()
    assert before, "no BLAS library found by threadpoolctl"
    return before


def test_limit_is_applied_and_restored(loaded_blas):
    others = _other_threads()
    with blas_threads(1):
        assert _blas_threads() == [1] * len(loaded_blas)
        assert _other_threads() == others  # OpenMP runtimes (torch's) are not BLAS: left alone
        a = np.random.default_rng(0).standard_normal((32, 32))
        np.linalg.eigh(a @ a.T)
    assert _blas_threads() == loaded_blas


def test_nested_limits_restore_in_order(loaded_blas):
    with blas_threads(2):
        assert _blas_threads() == [2] * len(loaded_blas)
        with blas_threads(1):
            assert _blas_threads() == [1] * len(loaded_blas)
        assert _blas_threads() == [2] * len(loaded_blas)
    assert _blas_threads() == loaded_blas


def test_restored_after_an_exception(loaded_blas):
    with pytest.raises(RuntimeError), blas_threads(1):
        raise RuntimeError("inside")
    assert _blas_threads() == loaded_blas


def test_forked_workers_inherit_the_limit(loaded_blas):
    # The metric's fork pool relies on it (seld_d2.evaluation.metric._pool_map).
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    with blas_threads(1):
        child = ctx.Process(target=_in_child, args=(queue,))
        child.start()
        counts = queue.get(timeout=60)
        child.join(timeout=60)
    assert counts == [1] * len(loaded_blas)
