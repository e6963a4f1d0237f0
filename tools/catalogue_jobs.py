"""The catalogue runner's jobs, job ids, results manifest, atomic writes and garment-affine job order.

Plain Python (no ComfyUI, no Ray). A job is one person x garment (x category, description, seed) to render. Its
id is a hash of both image files' content, the workflow digest and the job's values, so it is stable across runs,
machines and file renames; a job's outputs are named after it. The manifest (`manifest.jsonl` in the output
folder) holds one record per job: appended as jobs finish, and rewritten at the end of a run (atomically) with
exactly one record per job.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import os
import pathlib
import re
import time
from dataclasses import dataclass, field

from catalogue_workflow import CatalogueError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MANIFEST_NAME = "manifest.jsonl"
LOCK_NAME = ".catalogue.lock"
ID_LENGTH = 20
COLUMNS = ("person", "garment", "category", "description", "seed")


@dataclass
class Job:
    """One try-on to render. `error` is set when the job cannot be sent to a worker (e.g. a missing file)."""

    person: str
    garment: str
    category: str | None = None
    description: str | None = None
    seed: int | None = None
    source: str = ""  # where the job came from, for messages: "jobs.csv row 3"
    person_sha: str | None = None
    garment_sha: str | None = None
    job_id: str = ""
    error: str | None = None

    def values(self) -> dict:
        return {"category": self.category, "description": self.description, "seed": self.seed}

    def inputs(self) -> dict:
        return {"person": self.person, "garment": self.garment, **self.values()}


@dataclass
class Summary:
    """What a run did. `executed` counts jobs sent to a worker (the skipped ones were done before)."""

    total: int = 0
    skipped: int = 0
    executed: int = 0
    done: int = 0
    failed: int = 0
    interrupted: bool = False
    workers: int = 0
    seconds: float = 0.0
    startup_seconds: list[float] = field(default_factory=list)
    job_seconds: list[float] = field(default_factory=list)
    output: str = ""

    def line(self) -> str:
        state = "interrupted (rerun the same command to continue)" if self.interrupted else "finished"
        return (
            f"catalogue {state}: {self.total} jobs, {self.skipped} skipped (already in the manifest), {self.executed} executed: "
            f"{self.done} done, {self.failed} failed, in {self.seconds:.1f} s on {self.workers} worker(s). Manifest: {self.output}"
        )


# ----------------------------------------------------------------------------------------------
# Reading jobs
# ----------------------------------------------------------------------------------------------
def parse_seed(value, source: str) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        seed = int(str(value).strip())
    except ValueError:
        raise CatalogueError(f"{source}: seed {value!r} is not a whole number") from None
    if not 0 <= seed < 2**64:
        raise CatalogueError(f"{source}: seed {seed} is outside 0 .. 2**64-1")
    return seed


def text_or_none(value) -> str | None:
    if value is None:
        return None
    value = str(value)
    return value if value.strip() else None


def row_to_job(row: dict, base: pathlib.Path, source: str) -> Job:
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise CatalogueError(f"{source}: unknown column(s) {sorted(unknown)}; the columns are {', '.join(COLUMNS)}")
    for key in ("person", "garment"):
        if not text_or_none(row.get(key)):
            raise CatalogueError(f"{source}: the {key} column is empty (every job needs a person and a garment image)")
    return Job(
        person=str(base / str(row["person"]).strip()),
        garment=str(base / str(row["garment"]).strip()),
        category=text_or_none(row.get("category")),
        description=text_or_none(row.get("description")),
        seed=parse_seed(row.get("seed"), source),
        source=source,
    )


def read_jobs_file(path: pathlib.Path) -> list[Job]:
    """Jobs from a CSV (with a header row) or JSONL file; relative image paths are relative to the file's folder."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CatalogueError(f"--jobs: no such file {path}")
    base = path.resolve().parent
    jobs = []
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise CatalogueError(f"{path.name} line {number}: not JSON ({error})") from None
            if not isinstance(row, dict):
                raise CatalogueError(f"{path.name} line {number}: each line must be a JSON object with person, garment, ...")
            jobs.append(row_to_job(row, base, f"{path.name} line {number}"))
    else:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"person", "garment"} <= {f.strip() for f in reader.fieldnames}:
                raise CatalogueError(f"{path.name}: the first row must name the columns, at least person and garment (all: {', '.join(COLUMNS)})")
            for number, row in enumerate(reader, 2):
                row = {k.strip(): v for k, v in row.items() if k is not None}
                jobs.append(row_to_job(row, base, f"{path.name} row {number}"))
    if not jobs:
        raise CatalogueError(f"--jobs: {path} holds no jobs")
    return jobs


def images_in(folder: pathlib.Path, flag: str) -> list[pathlib.Path]:
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise CatalogueError(f"{flag}: no such folder {folder}")
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise CatalogueError(f"{flag}: {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def cross_product(persons: pathlib.Path, garments: pathlib.Path, category: str | None, description: str | None, seeds: list[int | None]) -> list[Job]:
    """Every person x every garment x every seed (None: the workflow's seed)."""
    return [
        Job(str(p), str(g), category, description, s, source=f"{p.name} x {g.name}" + ("" if s is None else f" seed {s}"))
        for p in images_in(persons, "--persons")
        for g in images_in(garments, "--garments")
        for s in seeds or [None]
    ]


# ----------------------------------------------------------------------------------------------
# Job ids
# ----------------------------------------------------------------------------------------------
_DIGESTS: dict[tuple, str] = {}


def file_digest(path: str) -> str:
    """sha256 of a file's content (memoised by path, size and modification time)."""
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def assign_ids(jobs: list[Job], workflow_digest: str) -> list[Job]:
    """Hashes the input files and gives each job its id; a missing or unreadable file makes the job fail (id from its path).

    Jobs with the same id (the same content and values twice) are kept once.
    """
    unique: dict[str, Job] = {}
    for job in jobs:
        for role in ("person", "garment"):
            path = getattr(job, role)
            try:
                setattr(job, f"{role}_sha", file_digest(path))
            except FileNotFoundError:
                job.error = job.error or f"{role}: file not found: {path} ({job.source})"
            except (IsADirectoryError, PermissionError, OSError) as error:
                job.error = job.error or f"{role}: cannot read {path}: {error.strerror or error} ({job.source})"
        key = {
            "workflow": workflow_digest,
            "person": job.person_sha or f"missing:{job.person}",
            "garment": job.garment_sha or f"missing:{job.garment}",
            **job.values(),
        }
        job.job_id = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:ID_LENGTH]
        unique.setdefault(job.job_id, job)
    return list(unique.values())


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------
def write_atomic(path: pathlib.Path, data: bytes) -> None:
    """Writes through a temporary file in the same folder and renames it over `path`: readers see all or nothing."""
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def remove_stale_temporaries(folder: pathlib.Path) -> None:
    """Deletes the temporary files (`.<name>.<pid>.tmp`) a killed earlier run left behind; never a finished output."""
    for stale in pathlib.Path(folder).glob(".*.tmp"):
        if re.fullmatch(r"\..+\.\d+\.tmp", stale.name):
            stale.unlink(missing_ok=True)


def lock_folder(folder: pathlib.Path):
    """Holds `.catalogue.lock` in the output folder for this process's life: a second run on the same folder stops at once."""
    import fcntl

    handle = open(pathlib.Path(folder) / LOCK_NAME, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise CatalogueError(f"--output: another catalogue run is using {folder}; wait for it, or stop it (Ctrl+C) first") from None
    return handle


def slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:limit] or "x"


def output_names(job: Job, count: int) -> list[str]:
    """`<person>__<garment>__<job id>.png` (with `_<n>` per image when the workflow saves several)."""
    stem = f"{slug(pathlib.Path(job.person).stem)}__{slug(pathlib.Path(job.garment).stem)}__{job.job_id}"
    return [f"{stem}.png"] if count == 1 else [f"{stem}_{n}.png" for n in range(count)]


# ----------------------------------------------------------------------------------------------
# Manifest
# ----------------------------------------------------------------------------------------------
def record(job: Job, status: str, outputs: list[str], seconds: float, error: str | None, **extra) -> dict:
    return {
        "job_id": job.job_id,
        "status": status,
        **job.inputs(),
        "output": outputs[0] if outputs else None,
        "outputs": outputs,
        "seconds": round(seconds, 3),
        "error": error,
        "source": job.source,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }


class Manifest:
    """`manifest.jsonl`: one JSON record per finished job; the last record of a job id wins when read."""

    def __init__(self, folder: pathlib.Path):
        self.folder = pathlib.Path(folder)
        self.path = self.folder / MANIFEST_NAME
        self.records: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash mid-write: that job simply runs again
                if isinstance(entry, dict) and "job_id" in entry:
                    self.records[entry["job_id"]] = entry

    def outputs_exist(self, entry: dict) -> bool:
        return bool(entry.get("outputs")) and all((self.folder / name).is_file() for name in entry["outputs"])

    def is_finished(self, job: Job, retry_failed: bool) -> bool:
        """Whether a rerun skips this job: done with every output present, or failed (unless retry_failed)."""
        entry = self.records.get(job.job_id)
        if entry is None:
            return False
        if entry.get("status") == "done":
            return self.outputs_exist(entry)
        return entry.get("status") == "failed" and not retry_failed

    def append(self, entry: dict) -> None:
        self.records[entry["job_id"]] = entry
        with open(self.path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def compact(self, current_ids: list[str]) -> None:
        """Rewrites the manifest with one record per job: this run's jobs that finished, plus earlier done jobs whose files exist."""
        keep = [self.records[i] for i in current_ids if i in self.records]
        listed = set(current_ids)
        keep += [e for i, e in self.records.items() if i not in listed and e.get("status") == "done" and self.outputs_exist(e)]
        self.records = {e["job_id"]: e for e in keep}
        write_atomic(self.path, "".join(json.dumps(e) + "\n" for e in keep).encode())


# ----------------------------------------------------------------------------------------------
# Garment-affine order
# ----------------------------------------------------------------------------------------------
class GarmentQueues:
    """Hands out jobs so that jobs sharing a garment go to the same worker where possible.

    Jobs are grouped by garment content (within a group: by person, then seed, so consecutive jobs reuse the
    most cached work). A worker keeps taking from its group; when its group is empty it takes the largest group
    no worker holds; when every group is held it takes from the far end of the largest one (work stealing), so no
    worker idles while jobs remain.
    """

    def __init__(self, jobs: list[Job]):
        groups: dict[str, list[Job]] = collections.defaultdict(list)
        for job in jobs:
            groups[job.garment_sha or job.garment].append(job)
        self.groups = {key: collections.deque(sorted(group, key=lambda j: (j.person_sha or j.person, str(j.seed)))) for key, group in groups.items()}
        self.held: dict[object, str] = {}

    def __len__(self) -> int:
        return sum(len(group) for group in self.groups.values())

    def push_front(self, job: Job) -> None:
        """Returns a job that was handed out but not run (its worker was lost)."""
        self.groups.setdefault(job.garment_sha or job.garment, collections.deque()).appendleft(job)

    def next_for(self, worker) -> Job | None:
        key = self.held.get(worker)
        if key is not None and self.groups.get(key):
            return self.groups[key].popleft()
        holders = {k for w, k in self.held.items() if w != worker}
        free = [k for k, group in self.groups.items() if group and k not in holders]
        if free:
            key = max(free, key=lambda k: len(self.groups[k]))
            self.held[worker] = key
            return self.groups[key].popleft()
        busy = [k for k, group in self.groups.items() if group]
        if not busy:
            self.held.pop(worker, None)
            return None
        key = max(busy, key=lambda k: len(self.groups[k]))
        return self.groups[key].pop()

    def release(self, worker) -> None:
        self.held.pop(worker, None)
