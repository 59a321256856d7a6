"""Running a batch on Dask distributed: the cluster, one task per case, the progress bar and the summary."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
import uuid
from typing import Dict, List, Optional

from neurocontrast.batch.manifest import Case, Job
from neurocontrast.batch.summary import write_summary
from neurocontrast.batch.tasks import batch_path, run_case
from neurocontrast.errors import NeuroContrastError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BatchOptions:
    """How a batch runs. ``workers``: LocalCluster size (None: :func:`default_workers`); ``scheduler``: address
    of an existing Dask scheduler (``tcp://host:8786``; then ``workers`` is ignored); ``memory_per_case``:
    the memory limit of each local worker (Dask byte string, e.g. ``"2GiB"``; one case runs per worker at a
    time); ``retries``: how many times a case is restarted on another worker after its worker died (Dask's
    ``distributed.scheduler.allowed-failures`` of the local scheduler); ``resume``: skip complete, unchanged
    cases. Raises NeuroContrastError on workers < 1, retries < 0 or an unreadable memory size."""

    workers: Optional[int] = None
    scheduler: Optional[str] = None
    memory_per_case: str = "2GiB"
    retries: int = 2
    resume: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        from dask.utils import parse_bytes

        if self.workers is not None and self.workers < 1:
            raise NeuroContrastError(f"--workers must be >= 1, got {self.workers}")
        if self.retries < 0:
            raise NeuroContrastError(f"--retries must be >= 0, got {self.retries}")
        try:
            if parse_bytes(self.memory_per_case) <= 0:
                raise ValueError
        except (ValueError, TypeError):
            raise NeuroContrastError(f"--memory-per-case must be a memory size such as 2GiB, got "
                                     f"{self.memory_per_case!r}") from None

    @property
    def memory_bytes(self) -> int:
        from dask.utils import parse_bytes

        return int(parse_bytes(self.memory_per_case))


def default_workers(memory_per_case_bytes: int, n_cases: int) -> int:
    """Workers of a LocalCluster: min(usable cores, 90 % of the machine's memory / memory per case, cases), >= 1."""
    import psutil

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    by_memory = int(0.9 * psutil.virtual_memory().total // max(memory_per_case_bytes, 1))
    return max(1, min(cores, by_memory, n_cases))


def _client(options: BatchOptions, n_cases: int):
    """(Client, n_workers, description). A LocalCluster of single-threaded worker processes bound to
    127.0.0.1 without a dashboard, or a client of the scheduler at ``options.scheduler``."""
    import dask
    from dask.distributed import Client, LocalCluster

    if options.scheduler:
        try:
            client = Client(options.scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise NeuroContrastError(f"cannot reach the Dask scheduler at {options.scheduler}: {exc}") from None
        n = len(client.scheduler_info().get("workers", {}))
        return client, n, f"scheduler {options.scheduler} ({n} workers now)"
    n = options.workers or default_workers(options.memory_bytes, n_cases)
    if not logging.getLogger().isEnabledFor(logging.DEBUG):  # Dask's INFO lines only with --debug
        logging.getLogger("distributed").setLevel(logging.WARNING)
        logging.getLogger("distributed.nanny").setLevel(logging.ERROR)  # "still alive after 4 s" at shutdown
    with dask.config.set({"distributed.scheduler.allowed-failures": options.retries}):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, memory_limit=options.memory_bytes,
                               host="127.0.0.1", silence_logs=logging.ERROR,
                               scheduler_kwargs={"dashboard": False, "allowed_failures": options.retries})
    return Client(cluster), n, f"LocalCluster of {n} worker(s), {options.memory_per_case} each"


def run_batch(job: Job, cases: List[Case], out_dir: str, options: BatchOptions) -> Dict:
    """Run every case of ``cases`` (one Dask task each) into ``out_dir``; write summary.csv/html.

    The summary is rewritten after every finished case, so a killed batch leaves a summary of what was
    finished. A case whose worker died more than ``options.retries`` times, or whose task raised, is failed
    with a one-line reason; the others go on. Returns ``{"results", "counts", "seconds", "workers",
    "cluster", "summary"}``; results are in manifest order.
    """
    from dask.distributed import as_completed
    from tqdm import tqdm

    os.makedirs(out_dir, exist_ok=True)
    shutil.rmtree(batch_path(out_dir, "tmp"), ignore_errors=True)  # leftovers of a killed batch
    t0 = time.perf_counter()
    results: Dict[str, Dict] = {}
    order = [c.case_id for c in cases]
    for c in cases:
        if c.problem:
            results[c.case_id] = {"case_id": c.case_id, "status": "failed", "reason": c.problem, "seconds": 0.0,
                                  "numbers": {}}
    todo = [c for c in cases if not c.problem]
    client, n_workers, description = (None, 0, "no case to run") if not todo else _client(options, len(todo))
    bar = tqdm(total=len(cases), initial=len(cases) - len(todo), desc=f"batch {job.name}", unit="case",
               disable=not options.progress)
    try:
        if todo:
            token = uuid.uuid4().hex[:8]
            futures = {client.submit(run_case, job.name, c.case_id, c.argv, c.inputs, os.path.abspath(out_dir),
                                     options.resume, key=f"{job.name}-{c.case_id}-{token}", pure=False): c.case_id
                       for c in todo}
            for future in as_completed(futures):
                cid = futures[future]
                results[cid] = _result(future, cid, options)
                bar.update(1)
                bar.set_postfix_str(_counts_text(results), refresh=False)
                write_summary(job, out_dir, [results[k] for k in order if k in results], thumbnails=False)
    finally:
        bar.close()
        if client is not None:
            cluster = client.cluster
            client.close()
            if cluster is not None:
                cluster.close()
    shutil.rmtree(batch_path(out_dir, "tmp"), ignore_errors=True)  # what a killed worker left behind
    ordered = [results[k] for k in order]
    paths = write_summary(job, out_dir, ordered, thumbnails=True)
    counts = {s: sum(r["status"] == s for r in ordered) for s in ("ok", "skipped", "failed")}
    return {"results": ordered, "counts": counts, "seconds": time.perf_counter() - t0, "workers": n_workers,
            "cluster": description, "summary": paths}


def _result(future, case_id: str, options: BatchOptions) -> Dict:
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        return {"case_id": case_id, "status": "failed", "seconds": None, "numbers": {},
                "reason": f"its worker died {options.retries + 1} times (memory limit {options.memory_per_case} "
                          "per worker exceeded, or the worker was killed)"}
    except Exception as exc:  # the task itself never raises for a failing case; this is the cluster failing
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return {"case_id": case_id, "status": "failed", "seconds": None, "numbers": {},
                "reason": f"{type(exc).__name__}: {text}"[:300]}


def _counts_text(results: Dict[str, Dict]) -> str:
    statuses = [r["status"] for r in results.values()]
    return ", ".join(f"{statuses.count(s)} {s}" for s in ("ok", "skipped", "failed") if statuses.count(s))
