"""Catalogue try-on: one ComfyUI workflow over many person x garment jobs, on Ray workers or in this process.

    .venv/bin/python tools/catalogue.py WORKFLOW (--jobs JOBS.csv|.jsonl | --persons DIR --garments DIR) --output DIR
                                        [--workers N] [--address auto|HOST:PORT] [--max-retries 2] [--retry-failed]

The workflow is a UI-format file saved by ComfyUI (the shipped workflows/*.json work unchanged) or an API-format
export. Each job fills the workflow's person and garment LoadImage nodes, the category (mask and caption nodes),
the description (caption node) and the seed (sampler); the default map finds those nodes in the shipped workflows
by type and title, and --person-node/--garment-node/--category-node/--description-node/--seed-node (a node id, title
or type, optionally `.input`) name other nodes. Outputs are PNGs in --output named `<person>__<garment>__<job id>.png`,
plus `manifest.jsonl`: one record per job (job id, inputs, status, output paths, seconds, error text, worker).

Job ids hash the image files' content, the workflow and the job's values, so rerunning the same command skips the
jobs whose outputs exist (and the failed ones, unless --retry-failed). --workers 0 runs in this process without Ray;
otherwise each worker is a Ray actor with one GPU (or --cpus-per-worker CPUs) and one headless ComfyUI whose models
stay loaded; a local Ray starts unless --address joins a running cluster. Ctrl+C stops cleanly; a rerun continues.
Ray is an optional dependency: `pip install ray` (or the `catalogue` extra). README.md, "Catalogues on a cluster".

Modules: tools/catalogue_workflow.py (the job-to-node map, --set, the workflow digest), tools/catalogue_jobs.py
(jobs, ids, manifest, atomic writes, garment-affine order), tools/catalogue_worker.py (the headless ComfyUI worker),
tools/catalogue_ray.py (the Ray actors and dispatch). Exit status: 0 all done, 1 some jobs failed, 2 a bad command
or workflow, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import signal
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from catalogue_jobs import (  # noqa: E402
    GarmentQueues,
    Job,
    Manifest,
    Summary,
    assign_ids,
    cross_product,
    lock_folder,
    output_names,
    read_jobs_file,
    record,
    remove_stale_temporaries,
    write_atomic,
)
from catalogue_worker import Worker, WorkerSettings, default_comfyui  # noqa: E402
from catalogue_workflow import ROLES, CatalogueError, load_workflow, parse_sets, role_targets, workflow_digest  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="catalogue.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", type=pathlib.Path, help="workflow file (UI or API format), e.g. workflows/idm_vton_upper_body.json")
    source = parser.add_argument_group("jobs (one of)")
    source.add_argument("--jobs", type=pathlib.Path, help="CSV with a header row, or JSONL: person, garment[, category, description, seed] per job")
    source.add_argument("--persons", type=pathlib.Path, help="folder of person photos (cross product with --garments)")
    source.add_argument("--garments", type=pathlib.Path, help="folder of garment photos")
    source.add_argument("--category", help="category of every cross-product job (default: the workflow's)")
    source.add_argument("--description", help="garment description of every cross-product job (default: the workflow's)")
    source.add_argument("--seeds", help="comma list of seeds: each pair runs once per seed (default: the workflow's seed)")
    parser.add_argument("--output", type=pathlib.Path, required=True, help="folder for the images and manifest.jsonl")
    run = parser.add_argument_group("running")
    run.add_argument("--workers", type=int, default=None, help="Ray worker actors (default: one per GPU, else per --cpus-per-worker CPUs); 0: in-process")
    run.add_argument("--address", default=None, help="join a running Ray cluster: 'auto' or HOST:PORT (default: start a local Ray)")
    run.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs each worker reserves (default 1)")
    run.add_argument("--max-retries", type=int, default=2, help="times a job is retried when its worker process dies (default 2)")
    run.add_argument("--retry-failed", action="store_true", help="run again the jobs the manifest records as failed")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads per worker (default: torch's)")
    run.add_argument("--no-progress", action="store_true", help="no progress line")
    run.add_argument("--verbose", action="store_true", help="show the workers' ComfyUI logs and sampler progress")
    comfy = parser.add_argument_group("ComfyUI")
    comfy.add_argument("--comfyui", default=None, help=f"ComfyUI folder (default: COMFYUI_PATH, else {default_comfyui()})")
    comfy.add_argument("--extra-model-paths", action="append", default=[], help="extra_model_paths.yaml for the workers (repeatable)")
    comfy.add_argument("--input-dir", default=None, help="ComfyUI input folder of the workers (default: ComfyUI's); job images go to its catalogue/ subfolder")
    comfy.add_argument("--worker-init", default=None, help="FILE.py[:FUNCTION] each worker runs before ComfyUI loads its nodes (default function init_worker)")
    mapping = parser.add_argument_group("which node inputs a job fills (NODE: id, title or type; NODE.input names the input)")
    for role in ROLES:
        mapping.add_argument(f"--{role}-node", action="append", default=[], metavar="NODE", help=f"the {role} target(s) (repeatable; replaces the default map)")
    mapping.add_argument("--output-node", action="append", default=[], metavar="NODE", help="node(s) whose images are the output (default: every SaveImage)")
    mapping.add_argument("--set", action="append", default=[], metavar="NODE.input=VALUE", help="change a widget for every job, e.g. KSampler.steps=20")
    args = parser.parse_args(argv)
    if bool(args.jobs) == bool(args.persons or args.garments):
        parser.error("give either --jobs FILE or --persons DIR --garments DIR")
    if args.persons and not args.garments or args.garments and not args.persons:
        parser.error("--persons and --garments go together")
    if args.workers is not None and args.workers < 0:
        parser.error("--workers must be 0 or more")
    if args.max_retries < 0:
        parser.error("--max-retries must be 0 or more")
    return args


def absolute_hook(spec: str | None) -> str | None:
    """--worker-init FILE.py[:FUNCTION] with FILE made absolute (workers may run in another folder)."""
    if not spec:
        return None
    path, sep, function = spec.partition(":")
    return str(pathlib.Path(path).resolve()) + sep + function


def build_jobs(args: argparse.Namespace, digest: str) -> list[Job]:
    if args.jobs:
        jobs = read_jobs_file(args.jobs)
    else:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else [None]
        jobs = cross_product(args.persons, args.garments, args.category, args.description, seeds)
    return assign_ids(jobs, digest)


class Progress:
    """One status line: finished/total, done and failed counts, images per minute, ETA (rewritten in place on a terminal)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled = total, enabled and total > 0
        self.started = time.monotonic()
        self.done = self.failed = 0
        self.last_print = 0.0
        self.tty = sys.stderr.isatty()

    def update(self, status: str) -> None:
        self.done += status == "done"
        self.failed += status != "done"
        now = time.monotonic()
        finished = self.done + self.failed
        if self.enabled and (self.tty or finished == self.total or now - self.last_print > 10):
            self.last_print = now
            elapsed = now - self.started
            rate = finished / elapsed * 60 if elapsed > 0 else 0.0
            eta = (self.total - finished) / (rate / 60) if rate > 0 else float("nan")
            eta_text = f"{int(eta // 60)}m{int(eta % 60):02d}s" if eta == eta else "?"
            line = f"catalogue {finished}/{self.total} | done {self.done} | failed {self.failed} | {rate:.1f} img/min | ETA {eta_text}"
            end = "\n" if not self.tty or finished == self.total else ""
            print(("\r" if self.tty else "") + line, end=end, file=sys.stderr, flush=True)


def run(args: argparse.Namespace, events=None) -> Summary:
    """Runs the catalogue; `events(kind, data)` is told of "ready" workers (their describe()) and "finished" records."""
    started = time.monotonic()
    events = events or (lambda kind, data: None)
    workflow = load_workflow(args.workflow)
    specs = {role: getattr(args, f"{role}_node") for role in ROLES}
    targets = role_targets(workflow, specs)
    sets = parse_sets(args.set)
    digest = workflow_digest(workflow, targets, sets, args.output_node)
    jobs = build_jobs(args, digest)
    for role in ("category", "description", "seed"):
        if not targets[role] and any(getattr(job, role) is not None for job in jobs):
            raise CatalogueError(f"the jobs give a {role} but the workflow has no node for it: name one with --{role}-node NODE[.input]")

    args.output.mkdir(parents=True, exist_ok=True)
    lock = lock_folder(args.output)
    remove_stale_temporaries(args.output)
    manifest = Manifest(args.output)
    summary = Summary(total=len(jobs), output=str(manifest.path))
    todo = [job for job in jobs if not manifest.is_finished(job, args.retry_failed)]
    summary.skipped = len(jobs) - len(todo)
    progress = Progress(len(todo), not args.no_progress)

    def finish(job: Job, result: dict) -> None:
        status = result["status"]
        names = output_names(job, len(result["images"])) if status == "done" else []
        for name, data in zip(names, result["images"], strict=True):
            write_atomic(args.output / name, data)
        extra = {"cpu_seconds": round(result["cpu_seconds"], 3) if "cpu_seconds" in result else None, "worker": result.get("worker"), "pid": result.get("pid")}
        entry = record(job, status, names, result.get("seconds", 0.0), result.get("error"), **extra)
        manifest.append(entry)
        summary.done += status == "done"
        summary.failed += status != "done"
        if status == "done":
            summary.job_seconds.append(entry["seconds"])
        progress.update(status)
        events("finished", entry)

    def payload(job: Job) -> dict:
        summary.executed += 1
        return {
            "job_id": job.job_id,
            "person": {"path": job.person, "sha": job.person_sha, "data": pathlib.Path(job.person).read_bytes()},
            "garment": {"path": job.garment, "sha": job.garment_sha, "data": pathlib.Path(job.garment).read_bytes()},
            **job.values(),
        }

    def ready(info: dict) -> None:
        summary.startup_seconds.append(info["startup_seconds"])
        events("ready", info)

    settings = WorkerSettings(
        workflow=workflow,
        targets=targets,
        sets=sets,
        output_specs=args.output_node or None,
        comfyui=args.comfyui or "",
        extra_model_paths=[str(pathlib.Path(p).resolve()) for p in args.extra_model_paths],
        input_dir=str(pathlib.Path(args.input_dir).resolve()) if args.input_dir else None,
        worker_init=absolute_hook(args.worker_init),
        threads=args.threads,
        verbose=args.verbose,
    )
    pool, owned_ray = None, False
    try:
        for job in [j for j in todo if j.error]:
            finish(job, {"status": "failed", "error": job.error, "images": []})  # e.g. a missing file: nothing to send
        runnable = GarmentQueues([j for j in todo if not j.error])
        if len(runnable) and args.workers == 0:
            worker = Worker(settings, 0)
            info = worker.describe()
            if info["error"]:
                raise CatalogueError(info["error"])
            summary.workers = 1
            ready(info)
            # Ctrl+C is taken by our handler, not asyncio's (which ComfyUI's executor runs under and which would turn it into a
            # cancelled node inside the job): the running job finishes and is recorded, then the run stops.
            stop_requested = []
            previous_handler = signal.signal(signal.SIGINT, lambda signum, frame: stop_requested.append(signum))
            try:
                while not stop_requested and (job := runnable.next_for(0)) is not None:
                    finish(job, worker.run(payload(job)))
            finally:
                signal.signal(signal.SIGINT, previous_handler)
            if stop_requested:
                raise KeyboardInterrupt
        elif len(runnable):
            try:
                import catalogue_ray
            except ModuleNotFoundError as error:
                if error.name != "ray":
                    raise
                raise CatalogueError("Ray is not installed: pip install ray (or the catalogue extra), or run in-process with --workers 0") from None

            owned_ray = catalogue_ray.connect(args.address, args.verbose)
            count, use_gpus = catalogue_ray.default_workers(args.cpus_per_worker)
            count = min(args.workers or count, len(runnable))
            summary.workers = count
            pool = catalogue_ray.RayPool(settings, count, args.cpus_per_worker, use_gpus, args.max_retries)
            events("pool", pool)
            pool.run(runnable, payload, finish, on_ready=ready)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl+C must not cut the manifest rewrite
        try:
            if pool is not None:
                pool.shutdown(graceful=not summary.interrupted)
            if owned_ray:
                import ray

                ray.shutdown()
            manifest.compact([job.job_id for job in jobs])
        finally:
            signal.signal(signal.SIGINT, previous)
            lock.close()
    summary.seconds = time.monotonic() - started
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = run(args)
    except CatalogueError as error:
        print(f"catalogue: {error}", file=sys.stderr)
        return 2
    except ConnectionError as error:
        print(f"catalogue: cannot join the Ray cluster at {args.address}: {error}", file=sys.stderr)
        return 1
    except (RuntimeError, TimeoutError) as error:
        print(f"catalogue: {error}", file=sys.stderr)
        return 1
    print(summary.line())
    print(json.dumps({k: v for k, v in vars(summary).items() if k not in ("job_seconds",)}))
    if summary.interrupted:
        return 130
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
