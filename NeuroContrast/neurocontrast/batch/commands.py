"""``neurocontrast batch perfusion|virtual|amplify MANIFEST.csv --out DIR [--workers N | --scheduler ADDRESS]``.

Each batch command carries the shared options of its single-case command (copied from that command's own
parser, so they cannot drift apart); the options given are appended to every case's command line.
"""

from __future__ import annotations

import argparse
import copy
import importlib
from typing import Dict, List

#: job → (module registering the single-case command, its group, its name)
_SINGLE_CASE = {"perfusion": ("neurocontrast.perfusion.commands", "", "perfusion"),
                "virtual": ("neurocontrast.contrast.commands", "contrast", "virtual"),
                "amplify": ("neurocontrast.contrast.commands", "contrast", "amplify")}


def _single_case_parser(job_name: str) -> argparse.ArgumentParser:
    """The parser of the single-case command of ``job_name``, built from its own ``register``."""
    from neurocontrast.cli import GROUPS

    module, group, name = _SINGLE_CASE[job_name]
    top = argparse.ArgumentParser(add_help=False).add_subparsers()
    groups = {"": top, **{g: top.add_parser(g).add_subparsers() for g in GROUPS}}
    importlib.import_module(module).register(groups)
    return groups[group].choices[name]


def register(groups: Dict[str, argparse._SubParsersAction]) -> None:
    """Add ``batch perfusion``, ``batch virtual`` and ``batch amplify`` to ``groups["batch"]``."""
    from neurocontrast.batch.manifest import JOBS

    if "batch" not in groups:
        return
    for job in JOBS.values():
        columns = ", ".join(c.name + ("" if c.required else "?") for c in job.columns)
        p = groups["batch"].add_parser(
            job.name, help=job.help,
            description=f"{job.help}, one Dask task per manifest row. MANIFEST columns: case_id, {columns} "
                        "(? = optional; paths relative to the manifest). DIR/<case_id>/ holds what "
                        f"'neurocontrast {' '.join(job.command)}' writes; DIR/summary.csv and summary.html "
                        "list every case. The other options are the single-case command's, for every case.")
        p.add_argument("manifest", metavar="MANIFEST.csv", help="one row per case (see docs/cohorts.md)")
        p.add_argument("--out", required=True, metavar="DIR", help="batch output folder (created)")
        where = p.add_mutually_exclusive_group()
        where.add_argument("--workers", type=int, metavar="N",
                           help="local worker processes (default: from the cores and --memory-per-case)")
        where.add_argument("--scheduler", metavar="ADDRESS",
                           help="an existing Dask scheduler, e.g. tcp://host:8786 (DIR must be visible to its workers)")
        p.add_argument("--memory-per-case", default=job.memory_per_case, metavar="SIZE",
                       help=f"memory limit of each local worker (default {job.memory_per_case})")
        p.add_argument("--retries", type=int, default=2,
                       help="restarts of a case whose worker died (default 2)")
        p.add_argument("--resume", action="store_true",
                       help="skip cases whose outputs are complete and whose inputs (sha256) and options are unchanged")
        p.add_argument("--no-progress", dest="batch_no_progress", action="store_true",
                       help="no progress bar over cases")
        shared: List[argparse.Action] = []
        for action in _single_case_parser(job.name)._actions:
            if not action.option_strings or action.dest in job.owned or isinstance(action, argparse._HelpAction):
                continue
            a = copy.copy(action)
            a.default, a.required, a.container = argparse.SUPPRESS, False, p
            p._add_action(a)
            shared.append(a)
        p.set_defaults(func=_cmd_batch, batch_job=job.name, batch_shared=shared)


def shared_argv(args, actions: List[argparse.Action]) -> List[str]:
    """The single-case options given on the batch command line, as argv (options not given are absent)."""
    from neurocontrast.cli import options_as_argv

    return options_as_argv(args, actions)


def _cmd_batch(args) -> int:
    import importlib.util

    from neurocontrast.batch.manifest import JOBS, read_manifest
    from neurocontrast.errors import NeuroContrastError

    if importlib.util.find_spec("distributed") is None:
        raise NeuroContrastError("neurocontrast batch needs Dask distributed: pip install 'neurocontrast[batch]'")
    from neurocontrast.batch.runner import BatchOptions, run_batch

    job = JOBS[args.batch_job]
    options = BatchOptions(workers=args.workers, scheduler=args.scheduler, memory_per_case=args.memory_per_case,
                           retries=args.retries, resume=args.resume, progress=not args.batch_no_progress)
    cases = read_manifest(args.manifest, job, shared_argv(args, args.batch_shared))
    out = run_batch(job, cases, args.out, options)
    c = out["counts"]
    minutes = out["seconds"] / 60.0
    print(f"batch {job.name}: {len(cases)} cases, {c['ok']} ok, {c['skipped']} skipped, {c['failed']} failed in "
          f"{out['seconds']:.1f} s ({(c['ok'] / minutes) if minutes > 0 else 0:.2f} cases/min computed) on {out['cluster']}")
    for r in out["results"]:
        if r["status"] == "failed":
            print(f"  {r['case_id']}: failed: {r['reason']}")
    print(f"summary: {out['summary']['csv']}, {out['summary']['html']}")
    return 1 if c["failed"] else 0
