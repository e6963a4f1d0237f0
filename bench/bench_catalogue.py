"""Benchmark: catalogue throughput with 1 and 2 Ray workers on CPU (tiny fixture models), and start-up against per-image cost.

Runs tools/catalogue.py's `run` in this process on a local Ray (`--cpus` CPUs, default 2) with the shipped
`idm_vton_upper_body` workflow (unchanged; the tests' --set overrides make it small: 64x80 photos, `--steps`
sampler steps), the tiny fixture weights and synthetic photos (the tests' person and garment drawings):
persons x garments x seeds jobs (default 24 x 2 x 1). Each worker has 1 CPU and 1 torch thread, at niceness 0
(Ray's default for workers is 15). For each worker count it prints:

- images/min over the whole run (start-up included) and in the steady state (after every worker finished its
  first job), and the 2-worker/1-worker ratio of both;
- per-worker start-up: starting ComfyUI in the actor (imports, custom nodes) and the first job's extra time over a
  later job (model loading), against the mean seconds per later image, wall and CPU (the worker process's CPU
  time: when it stays flat while the wall time grows, the workers wait for cores, not for each other).

    .venv/bin/python bench/bench_catalogue.py                  # 48 jobs, 2 steps
    .venv/bin/python bench/bench_catalogue.py --persons 12 --seeds 2 --steps 4
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "tools"), str(REPO / "tests" / "support")]

import catalogue  # noqa: E402
import catalogue_fixtures as cf  # noqa: E402
import comfy_host  # noqa: E402

FIXTURE_CACHE = REPO / ".comfyui" / "fixtures"  # shared with `make run`'s smoke mode


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2", help="comma list of worker counts to time")
    parser.add_argument("--persons", type=int, default=24, help="synthetic person photos")
    parser.add_argument("--garments", type=int, default=2, help="synthetic garment photos")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per person x garment pair")
    parser.add_argument("--steps", type=int, default=2, help="sampler steps per image")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--fixtures", type=pathlib.Path, default=None, help="a fixture extra_model_paths.yaml (default: write them to .comfyui/fixtures)")
    return parser.parse_args(argv)


def time_run(workers: int, photos: pathlib.Path, yaml: pathlib.Path, root: pathlib.Path, seeds: int, steps: int) -> dict:
    output = root / f"out_{workers}"
    argv = [str(REPO / "workflows" / "idm_vton_upper_body.json"), "--persons", str(photos / "persons"), "--garments", str(photos / "garments")]
    argv += ["--seeds", ",".join(str(s) for s in range(seeds)), "--output", str(output), "--workers", str(workers)]
    argv += cf.fast_args(yaml, root / "comfy_input") + ["--set", f"KSampler.steps={steps}"]
    first_done: dict[int, float] = {}
    finished: list[tuple[float, dict]] = []

    def events(kind, data):
        if kind == "finished":
            now = time.monotonic()
            finished.append((now, data))
            first_done.setdefault(data["worker"], now)

    started = time.monotonic()
    summary = catalogue.run(catalogue.parse_args(argv), events)
    wall = time.monotonic() - started
    assert summary.failed == 0 and summary.done == len(finished), summary
    warm = max(first_done.values())
    steady = [t for t, _ in finished if t > warm]
    steady_rate = 60 * len(steady) / (finished[-1][0] - warm) if len(steady) > 1 else float("nan")
    firsts: dict[int, float] = {}  # each worker's first job (it loads the models)
    later, later_cpu = [], []
    for _, record in finished:
        if record["worker"] in firsts:
            later.append(record["seconds"])
            later_cpu.append(record["cpu_seconds"])
        else:
            firsts[record["worker"]] = record["seconds"]
    per_image = statistics.mean(later)
    model_load = statistics.mean(max(0.0, s - per_image) for s in firsts.values())
    return {
        "workers": workers,
        "jobs": summary.done,
        "wall_s": round(wall, 1),
        "images_per_min_overall": round(60 * summary.done / wall, 2),
        "images_per_min_steady": round(steady_rate, 2),
        "startup_comfyui_s": round(statistics.mean(summary.startup_seconds), 1),
        "first_job_extra_s": round(model_load, 2),
        "per_image_s": round(per_image, 2),
        "per_image_cpu_s": round(statistics.mean(later_cpu), 2),
    }


def write_photos(folder: pathlib.Path, persons: int, garments: int) -> None:
    """`persons` synthetic people (sizes and positions vary) and `garments` garments (colours vary), 64x80."""
    people = [(52 + 2 * (n % 5), n % 7, (3 * n) % 9) for n in range(persons)]
    colours = [((200 - 37 * n) % 256, (40 + 71 * n) % 256, (40 + 113 * n) % 256) for n in range(garments)]
    cf.write_photos(folder, people, colours)


def main(argv=None) -> int:
    args = parse_args(argv)
    import ray

    yaml = args.fixtures or comfy_host.write_fixture_models(FIXTURE_CACHE, ("fast",))
    root = pathlib.Path(tempfile.mkdtemp(prefix="bench_catalogue_"))
    photos = root / "photos"
    write_photos(photos, args.persons, args.garments)
    # Ray starts its workers at niceness 15; on a machine shared with other jobs that measures the neighbours, not the runner
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        rows = [time_run(int(w), photos, yaml, root, args.seeds, args.steps) for w in args.workers.split(",")]
    finally:
        ray.shutdown()
    columns = list(rows[0])
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(str(row[c]) for c in columns))
    if len(rows) >= 2:
        base, top = rows[0], rows[-1]
        print(
            f"ratio {top['workers']}/{base['workers']} workers: overall {top['images_per_min_overall'] / base['images_per_min_overall']:.2f}x, "
            f"steady {top['images_per_min_steady'] / base['images_per_min_steady']:.2f}x"
        )
    print(json.dumps(rows))
    print(f"load average during the runs: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
