"""Worker threads for the NumPy/SciPy/SimpleITK steps that release the GIL (ufuncs, ``scipy.ndimage``
filters, BLAS, SimpleITK writes): frames or voxel blocks spread over the CPUs this process may use."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, List, Optional, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask on Linux, e.g. a cluster job's allocation), >= 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def thread_map(func: Callable[[T], R], items: Iterable[T], n_threads: Optional[int] = None) -> List[R]:
    """``[func(x) for x in items]`` over ``n_threads`` worker threads (default :func:`available_cpus`), in order.

    One thread (or one item) runs in the calling thread. An exception of ``func`` propagates."""
    items = list(items)
    workers = max(1, min(int(n_threads or available_cpus()), len(items)))
    if workers == 1:
        return [func(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(func, items))

