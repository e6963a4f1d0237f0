"""The catalogue's Ray side: worker actors, garment-affine dispatch and Ray's own fault tolerance.

Each worker is a Ray actor (tools/catalogue_worker.Worker) holding one headless ComfyUI, one GPU when the
cluster has GPUs (`num_gpus=1`), else `--cpus-per-worker` CPUs. Ray restarts an actor whose process dies
(`max_restarts=-1`) and retries the call it was running (`max_task_retries=--max-retries`); a call that still
fails after that is the job's failure. One call is in flight per worker, so a crash only ever charges the job that
was running. Only the driver writes files (outputs and manifest), so a crash can never leave a half-written or
duplicated output.
"""

from __future__ import annotations

import os
import time

import ray
from catalogue_jobs import GarmentQueues
from catalogue_worker import TOOLS, Worker, WorkerSettings

STARTUP_TIMEOUT = 1800.0  # seconds to wait for the first worker to start (model loading) before giving up


def connect(address: str | None, verbose: bool) -> bool:
    """Joins `address` ("auto" or host:port) or starts a local Ray; reuses a session this process already has. True if we started it."""
    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, log_to_driver=verbose, configure_logging=verbose)
    return True


def default_workers(cpus_per_worker: float) -> tuple[int, bool]:
    """(workers, use GPUs): one per GPU of the cluster, else one per `cpus_per_worker` CPUs."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return gpus, True
    return max(1, int(resources.get("CPU", 1) // cpus_per_worker)), False


def worker_error_text(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__


class RayPool:
    """`count` worker actors; `run` feeds them jobs and calls `finish(job, result)` for each finished one."""

    def __init__(self, settings: WorkerSettings, count: int, cpus_per_worker: float, use_gpus: bool, max_retries: int):
        actor = ray.remote(Worker).options(
            num_cpus=cpus_per_worker,
            num_gpus=1 if use_gpus else 0,
            max_restarts=-1,
            max_task_retries=max_retries,
            runtime_env={"env_vars": {"PYTHONPATH": str(TOOLS) + os.pathsep + "${PYTHONPATH}"}},  # Ray expands ${...}
        )
        self.max_retries = max_retries
        self.actors = {index: actor.remote(settings, index) for index in range(count)}
        self.describe_refs = {self.actors[i].describe.remote(): i for i in self.actors}
        self.ready: dict[int, dict] = {}
        self.errors: dict[int, str] = {}

    def run(self, queues: GarmentQueues, payload, finish, on_ready=None) -> None:
        running: dict = {}  # ref -> (worker index, job)
        probes: dict = {}  # ref of a describe() after a crash -> (worker index, job, error text)
        started = time.monotonic()

        def submit(index: int) -> None:
            job = queues.next_for(index)
            if job is not None:
                running[self.actors[index].run.remote(payload(job))] = (index, job)

        def retire(index: int, reason: str) -> None:
            self.errors[index] = reason
            self.ready.pop(index, None)
            queues.release(index)
            ray.kill(self.actors[index], no_restart=True)

        # until every job is handed out and back; workers still starting are not waited for once nothing is left to give them
        while running or probes or (len(queues) and (self.ready or self.describe_refs)):
            busy = {index for index, _ in running.values()} | {index for index, _, _ in probes.values()}
            for index in [i for i in self.ready if i not in busy]:
                submit(index)  # a job given back by a lost worker goes to an idle one
            waiting = list(self.describe_refs) + list(running) + list(probes)
            if not waiting:
                break
            done, _ = ray.wait(waiting, num_returns=1, timeout=0.5)
            if not self.ready and not running and not probes and time.monotonic() - started > STARTUP_TIMEOUT:
                raise TimeoutError(f"no worker started in {STARTUP_TIMEOUT:.0f} s: the cluster has {ray.cluster_resources()}")
            for ref in done:
                if ref in self.describe_refs:
                    index = self.describe_refs.pop(ref)
                    try:
                        info = ray.get(ref)
                    except ray.exceptions.RayError as error:
                        info = {"error": f"the worker did not start: {worker_error_text(error)}"}
                    if info.get("error"):
                        retire(index, info["error"])
                        continue
                    self.ready[index] = info
                    if on_ready:
                        on_ready(info)
                    submit(index)
                elif ref in running:
                    index, job = running.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayActorError as error:
                        # Ray restarted the worker and retried the call max_retries times; ask the worker whether it is back
                        probes[self.actors[index].describe.remote()] = (index, job, worker_error_text(error))
                        continue
                    if result["status"] == "worker_error":
                        queues.push_front(job)
                        retire(index, result["error"])
                        continue
                    submit(index)  # the worker starts its next job while the driver writes this one's files
                    finish(job, result)
                else:
                    index, job, text = probes.pop(ref)
                    try:
                        info = ray.get(ref)  # done: ray.wait returned it
                    except ray.exceptions.RayError as error:
                        info = {"error": worker_error_text(error)}
                    if info.get("error"):
                        queues.push_front(job)  # the worker is gone for good: another worker takes the job
                        retire(index, info["error"])
                        continue
                    self.ready[index] = info
                    attempts = self.max_retries + 1
                    finish(job, {"status": "failed", "error": f"the worker process died while running this job ({attempts} attempts): {text}", "images": []})
                    submit(index)
            if not self.ready and not self.describe_refs and not running and not probes and len(queues):
                raise RuntimeError("every worker failed to start: " + "; ".join(sorted(set(self.errors.values()))))

    def shutdown(self, graceful: bool = True) -> None:
        """Lets the (idle) workers remove their scratch folders, then ends every worker process."""
        closing = [self.actors[index].close.remote() for index in self.ready] if graceful else []
        if closing:
            ray.wait(closing, num_returns=len(closing), timeout=10)
        for actor in self.actors.values():
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
