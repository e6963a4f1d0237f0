"""Catalogue runner (tools/catalogue.py): the shipped upper-body workflow over many jobs, on Ray and in-process.

Local Ray with 2 CPU worker actors (each a headless ComfyUI with the tiny fixture models), 64x80 photos, 2 sampler
steps (--set overrides; the workflow file is unchanged). The 12 jobs are 3 persons x 2 garments x 2 seeds.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import catalogue_fixtures as cf
import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")

REPO = pathlib.Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "workflows" / "idm_vton_upper_body.json"
CLI = [sys.executable, str(REPO / "tools" / "catalogue.py")]
SEEDS = "7,8"


@pytest.fixture(scope="module")
def local_ray():
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory, fixture_models):
    root = tmp_path_factory.mktemp("catalogue")
    photos = cf.write_photos(root / "photos")
    return {"root": root, "photos": photos, "flags": cf.fast_args(fixture_models, root / "comfy_input")}


def cross_product_args(setup, output: pathlib.Path) -> list[str]:
    root = setup["root"] / "photos"
    return [str(WORKFLOW), "--persons", str(root / "persons"), "--garments", str(root / "garments"), "--seeds", SEEDS, "--output", str(output)]


def run_catalogue(argv: list[str], events=None):
    import catalogue

    return catalogue.run(catalogue.parse_args(argv), events)


def manifest(folder: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def pixels(path: pathlib.Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def assert_complete_and_clean(folder: pathlib.Path, jobs: int) -> list[dict]:
    """Every job is in the manifest exactly once, done, with one whole PNG; nothing else is in the folder."""
    records = manifest(folder)
    assert len(records) == jobs and len({r["job_id"] for r in records}) == jobs
    assert all(r["status"] == "done" and r["error"] is None for r in records), [r["error"] for r in records if r["error"]]
    outputs = sorted(r["output"] for r in records)
    assert sorted(p.name for p in folder.iterdir()) == sorted(outputs + ["manifest.jsonl", ".catalogue.lock"])  # no temporary or duplicate file
    for name in outputs:
        with Image.open(folder / name) as image:
            image.load()  # a truncated file raises here
            assert image.size == (cf.WIDTH, cf.HEIGHT)
    return records


@pytest.fixture(scope="module")
def killed_ray_run(local_ray, setup):
    """The 12 jobs on 2 Ray workers; worker 0's process is killed while it renders its second job."""
    output = setup["root"] / "ray_out"
    killed: dict = {}

    def events(kind, data):
        if kind == "finished" and data["worker"] == 0 and not killed:
            # the driver has already handed worker 0 its next job: kill the process while it renders it
            killed["pid"] = data["pid"]
            threading.Timer(0.3, os.kill, (data["pid"], signal.SIGKILL)).start()

    summary = run_catalogue(cross_product_args(setup, output) + ["--workers", "2", "--max-retries", "2"] + setup["flags"], events)
    return output, summary, killed


@pytest.fixture(scope="module")
def in_process_run(setup):
    """The same command with --workers 0 (no Ray), stopped with Ctrl+C after 3 jobs, then run again to the end."""
    output = setup["root"] / "local_out"
    argv = CLI + cross_product_args(setup, output) + ["--workers", "0"] + setup["flags"]
    process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while process.poll() is None and time.time() < deadline and not ((output / "manifest.jsonl").exists() and len(manifest(output)) >= 3):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    files = sorted(p.name for p in output.iterdir())
    interrupted = {"returncode": process.returncode, "stdout": out, "stderr": err, "manifest": manifest(output), "files": files}
    rerun = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    return output, interrupted, rerun


# ----------------------------------------------------------------------------------------------
def test_twelve_jobs_on_two_ray_workers_equal_the_same_jobs_run_in_process(killed_ray_run, in_process_run, setup):
    output, summary, _ = killed_ray_run
    assert (summary.executed, summary.done, summary.failed, summary.workers) == (12, 12, 0, 2)
    records = assert_complete_and_clean(output, 12)
    assert {r["worker"] for r in records} == {0, 1}
    assert {(pathlib.Path(r["person"]).name, pathlib.Path(r["garment"]).name, r["seed"]) for r in records} == {
        (p.name, g.name, s) for p in setup["photos"]["persons"] for g in setup["photos"]["garments"] for s in (7, 8)
    }
    local, _, rerun = in_process_run
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    local_records = {r["job_id"]: r for r in assert_complete_and_clean(local, 12)}
    for r in records:
        assert local_records[r["job_id"]]["output"] == r["output"]  # the same job ids, so the same file names
        assert np.array_equal(pixels(output / r["output"]), pixels(local / r["output"])), r["output"]
    assert len({pixels(output / r["output"]).tobytes() for r in records}) == 12  # every job gave its own image


def test_a_worker_killed_mid_run_still_gives_every_job_done_exactly_once(killed_ray_run, setup):
    output, summary, killed = killed_ray_run
    assert killed, "worker 0 finished no job"
    assert (summary.done, summary.failed) == (12, 0)
    records = assert_complete_and_clean(output, 12)  # one record and one whole file per job, no temporary file
    pids_of_worker_0 = [r["pid"] for r in records if r["worker"] == 0]
    assert killed["pid"] in pids_of_worker_0
    assert len(set(pids_of_worker_0)) == 2, "Ray did not restart worker 0 in a new process (or restarted it twice)"
    assert not list((setup["root"] / "comfy_input" / "catalogue").glob(".*.tmp"))


def test_ctrl_c_leaves_a_consistent_manifest_and_the_rerun_does_the_rest(in_process_run):
    output, interrupted, rerun = in_process_run
    assert interrupted["returncode"] == 130, interrupted["stderr"][-3000:]
    assert "interrupted" in interrupted["stdout"]
    finished = interrupted["manifest"]
    assert 3 <= len(finished) < 12 and len({r["job_id"] for r in finished}) == len(finished)
    assert all(r["status"] == "done" for r in finished)
    assert interrupted["files"] == sorted([r["output"] for r in finished] + ["manifest.jsonl", ".catalogue.lock"])  # no half-written file
    assert json.loads(rerun.stdout.splitlines()[-1])["executed"] == 12 - len(finished)


def test_a_rerun_executes_nothing_and_deleting_two_outputs_executes_exactly_two(killed_ray_run, setup):
    output, _, _ = killed_ray_run
    argv = cross_product_args(setup, output) + ["--workers", "2"] + setup["flags"]
    again = run_catalogue(argv)
    assert (again.skipped, again.executed, again.workers) == (12, 0, 0)  # no worker even starts

    records = manifest(output)
    deleted = [records[3]["output"], records[8]["output"]]
    before = {name: pixels(output / name) for name in deleted}
    for name in deleted:
        (output / name).unlink()
    third = run_catalogue(argv)
    assert (third.skipped, third.executed, third.done, third.failed) == (10, 2, 2, 0)
    assert_complete_and_clean(output, 12)
    for name in deleted:
        assert np.array_equal(pixels(output / name), before[name])


def test_joined_cluster_runs_a_job_list_where_a_missing_file_and_a_photo_without_a_person_fail_clearly(setup, tmp_path):
    """`ray start --head` on a free loopback port, the CLI with --address, `ray stop` after.

    The jobs: two good rows, a person file that does not exist and a white photo without a person. Both bad rows
    are recorded failed with the message that names the input and the fix; the good rows are done.
    """
    import comfy_host

    if ray.is_initialized():
        ray.shutdown()  # `ray stop` stops every Ray on this machine, this process's local one too
    ray_cli = str(pathlib.Path(sys.executable).parent / "ray")
    port = comfy_host.free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    photos = setup["photos"]
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(
        "person,garment,category,description,seed\n"
        f"{photos['persons'][0]},{photos['garments'][0]},upper_body,red t-shirt,1\n"
        f"{tmp_path / 'no_such_person.png'},{photos['garments'][0]},upper_body,,2\n"
        f"{photos['nobody'][0]},{photos['garments'][1]},upper_body,,3\n"
        f"{photos['persons'][1]},{photos['garments'][1]},upper_body,blue t-shirt,4\n"
    )
    output = tmp_path / "out"
    argv = CLI + [str(WORKFLOW), "--jobs", str(jobs), "--output", str(output)] + setup["flags"]
    start = [ray_cli, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"]
    subprocess.run(start, check=True, capture_output=True, timeout=120, env=env)
    try:
        result = subprocess.run(argv + ["--address", f"127.0.0.1:{port}", "--workers", "2"], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    finally:
        subprocess.run([ray_cli, "stop"], capture_output=True, timeout=120, env=env)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]  # 1: some jobs failed
    summary = json.loads(result.stdout.splitlines()[-1])
    assert (summary["workers"], summary["executed"], summary["done"], summary["failed"]) == (2, 3, 2, 2)  # the missing file is never sent
    by_seed = {r["seed"]: r for r in manifest(output)}
    assert len(by_seed) == 4 and by_seed[1]["status"] == by_seed[4]["status"] == "done"
    assert by_seed[2]["status"] == "failed" and by_seed[2]["output"] is None
    assert by_seed[2]["error"] == f"person: file not found: {tmp_path / 'no_such_person.png'} (jobs.csv row 3)"
    assert by_seed[3]["status"] == "failed" and by_seed[3]["output"] is None
    assert by_seed[3]["error"].startswith("TryOnAgnosticMask #5: TryOnInputError: image: no person found in image 0 of the batch"), by_seed[3]["error"]
    assert "Use a photo of a person" in by_seed[3]["error"]
    assert sorted(p.name for p in output.iterdir()) == sorted([by_seed[1]["output"], by_seed[4]["output"], "manifest.jsonl", ".catalogue.lock"])

    # failed jobs run again only with --retry-failed (here in-process: the same job ids without Ray)
    again = subprocess.run(argv + ["--workers", "0", "--retry-failed"], cwd=REPO, capture_output=True, text=True, timeout=300)
    summary = json.loads(again.stdout.splitlines()[-1])
    assert (summary["skipped"], summary["executed"], summary["failed"]) == (2, 1, 2), again.stderr[-3000:]
    assert len(manifest(output)) == 4


# ----------------------------------------------------------------------------------------------
# Plain parts (no ComfyUI)
def test_the_default_map_finds_the_job_inputs_of_every_shipped_workflow():
    import catalogue_workflow as cw

    exact = {
        "idm_vton_upper_body": {"person": [("3", "image")], "garment": [("8", "image")], "category": [("5", "category"), ("10", "category")]},
        "idm_vton_batch": {
            "person": [("3", "image")],
            "garment": [("7", "image"), ("9", "image"), ("11", "image")],  # every garment slot of the batch gets the job's garment
            "category": [("5", "category"), ("15", "category")],
        },
    }
    paths = sorted((REPO / "workflows").glob("*.json"))
    assert {"idm_vton_upper_body", "idm_vton_batch", "idm_vton_dresscode", "idm_vton_manual_mask"} <= {p.stem for p in paths}
    for path in paths:
        workflow = cw.load_workflow(path)
        nodes = cw.nodes_of(workflow)
        targets = cw.role_targets(workflow)
        for role in ("person", "garment"):
            loaders = [(n.id, "image") for n in nodes if n.type == "LoadImage" and role in n.title.lower()]
            assert targets[role] == loaders and loaders, (path.stem, role)
        category_nodes = {n.id for n in nodes if n.type in ("TryOnAgnosticMask", "TryOnGarmentCaption", "OOTDiffusionApply")}
        assert {node_id for node_id, _ in targets["category"]} == category_nodes and category_nodes, path.stem
        assert len(targets["seed"]) == 1 and targets["seed"][0][1] in ("seed", "noise_seed"), (path.stem, targets["seed"])
        assert targets["description"] == [(n.id, "description") for n in nodes if n.type == "TryOnGarmentCaption"], path.stem
        for role, pairs in exact.get(path.stem, {}).items():
            assert targets[role] == pairs, (path.stem, role, targets[role])


def test_map_flags_name_nodes_by_id_title_or_type_and_bad_names_say_what_exists():
    import catalogue_workflow as cw

    workflow = cw.load_workflow(WORKFLOW)
    targets = cw.role_targets(workflow, {"person": ["Garment photo"], "garment": ["3.image"], "seed": ["KSampler"]})
    assert targets["person"] == [("8", "image")] and targets["garment"] == [("3", "image")] and targets["seed"] == [("18", "seed")]
    with pytest.raises(cw.CatalogueError, match="no node matches 'Shoe photo'.*#3 LoadImage 'Person photo'"):
        cw.role_targets(workflow, {"garment": ["Shoe photo"]})
    with pytest.raises(cw.CatalogueError, match="--set KSampler.stepz: #18 KSampler has no widget input 'stepz'"):
        cw.apply_sets({"18": {"class_type": "KSampler", "inputs": {"steps": 30, "model": ["4", 0]}}}, cw.parse_sets(["KSampler.stepz=2"]))


def test_job_ids_follow_file_content_not_file_names(tmp_path):
    import catalogue_jobs as cj

    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"same" if name != "c.png" else b"other")
    jobs = [cj.Job(str(tmp_path / "a.png"), str(tmp_path / "c.png")), cj.Job(str(tmp_path / "b.png"), str(tmp_path / "c.png"), seed=1)]
    first = [j.job_id for j in cj.assign_ids([cj.Job(j.person, j.garment, seed=j.seed) for j in jobs], "wf")]
    renamed = cj.assign_ids([cj.Job(str(tmp_path / "b.png"), str(tmp_path / "c.png")), cj.Job(str(tmp_path / "a.png"), str(tmp_path / "c.png"), seed=1)], "wf")
    assert [j.job_id for j in renamed] == first  # a.png and b.png hold the same bytes
    assert cj.assign_ids([cj.Job(str(tmp_path / "a.png"), str(tmp_path / "c.png"))], "other workflow")[0].job_id != first[0]
    assert len(set(first)) == 2  # the seed is part of the id


def test_jobs_sharing_a_garment_go_to_one_worker_until_others_run_dry():
    import catalogue_jobs as cj

    jobs = [cj.Job(f"p{p}", f"g{g}", seed=s, person_sha=f"p{p}", garment_sha=f"g{g}") for p in range(3) for g in range(3) for s in range(2)]
    queues = cj.GarmentQueues(jobs)
    taken = {"w0": [queues.next_for("w0") for _ in range(6)], "w1": [queues.next_for("w1") for _ in range(6)]}
    assert len({j.garment for j in taken["w0"]}) == 1 and len({j.garment for j in taken["w1"]}) == 1
    assert taken["w0"][0].garment != taken["w1"][0].garment
    rest = [queues.next_for("w0") for _ in range(6)]
    assert len({j.garment for j in rest}) == 1 and queues.next_for("w1") is None and queues.next_for("w0") is None


def test_a_second_run_on_the_same_output_folder_stops_at_once(tmp_path):
    import catalogue_jobs as cj
    import catalogue_workflow as cw

    first = cj.lock_folder(tmp_path)
    try:
        with pytest.raises(cw.CatalogueError, match="another catalogue run is using"):
            cj.lock_folder(tmp_path)
    finally:
        first.close()
    cj.lock_folder(tmp_path).close()  # free again once the first run ends
