"""Reliability matrix, runs: an interrupt mid-sampling, five prompts queued at once, twenty runs in a row.

Through a real ComfyUI server. After every run the probe node reports, from inside the server, that no
TryOnState holds garment features (the per-step bank is empty) and that no sampling step is left open.
"""

from __future__ import annotations

import re
import time

import numpy as np
import reliability_host as rh

RSS_GROWTH_BOUND = 16 * 2**20  # bytes: server RSS growth from runs 3-7 to runs 16-20 (medians)
LONG_STEPS = 400


def assert_nothing_left_over(host, keep_graph: dict | None = None) -> dict:
    report = rh.probe(host, keep_graph)
    assert report["bank_tensors"] == 0 and report["step_depth"] == 0 and report["cache_timesteps"] == 0, report
    return report


def cached_nodes(entry: dict) -> list[str]:
    return [node for kind, data in entry["status"]["messages"] if kind == "execution_cached" for node in data["nodes"]]


def wait_for_sampling_progress(host, log_offset: int, steps: int, timeout: float = 120) -> None:
    """Returns once the server's progress bar shows a few finished steps of the long run."""
    pattern = re.compile(rf"\b([3-9]|\d\d+)/{steps} \[")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pattern.search(host.log_text()[log_offset:]):
            return
        assert host.alive()
        time.sleep(0.1)
    raise TimeoutError("the long run never started sampling:\n" + host.log_text()[-3000:])


def test_an_interrupt_mid_sampling_leaves_nothing_behind_and_the_next_run_is_correct(host):
    short = rh.graph(seed=5, steps=3)
    status, message, entry = rh.outcome(host, short, keep_cache=False)
    assert status == "success", message
    (reference,) = rh.images(host, entry)

    offset = len(host.log_text())
    answer = host.queue(rh.graph(seed=5, steps=LONG_STEPS))  # same patched MODEL (apply is cached), a long sampling
    wait_for_sampling_progress(host, offset, LONG_STEPS)
    host.post_json("/interrupt", {})
    interrupted = host.wait_history(answer["prompt_id"])
    kinds = {kind: data for kind, data in interrupted["status"]["messages"]}
    assert "execution_interrupted" in kinds, interrupted["status"]
    assert kinds["execution_interrupted"]["node_id"] == "sample" and kinds["execution_interrupted"]["node_type"] == "KSampler"
    assert host.alive()
    assert_nothing_left_over(host, keep_graph=short)  # keeps the loaders and the patched MODEL cached

    status, message, entry = rh.outcome(host, short, keep_cache=False)
    assert status == "success", message
    assert "sample" not in cached_nodes(entry) and "apply" in cached_nodes(entry)  # re-sampled on the interrupted MODEL
    (after,) = rh.images(host, entry)
    assert np.array_equal(after, reference)
    assert_nothing_left_over(host)


def test_five_prompts_queued_at_once_all_succeed_with_distinct_results(host):
    answers = [host.queue(rh.graph(seed=300 + i)) for i in range(5)]
    assert all("prompt_id" in a for a in answers), answers
    results = []
    for answer in answers:
        entry = host.wait_history(answer["prompt_id"])
        assert entry["status"]["status_str"] == "success", entry["status"]
        (image,) = rh.images(host, entry)
        results.append(image)
    for i in range(5):
        for j in range(i + 1, 5):
            assert not np.array_equal(results[i], results[j]), (i, j)
    assert host.alive()
    assert_nothing_left_over(host)


def test_twenty_runs_in_a_row_do_not_grow_memory(host):
    """Server RSS, median of runs 3-7 (after warm-up) against median of runs 16-20: under RSS_GROWTH_BOUND.

    Medians, because a single reading right after a run can include up to ~25 MiB of transient buffers that
    the allocator has not handed back yet. Every run re-applies (new patches, new TryOnState) and re-samples.
    """
    rss, states = [], []
    for run in range(20):
        graph = rh.graph(seed=500 + run)
        graph["apply"]["inputs"]["garment_strength"] = 1.0 - 0.01 * run
        status, message, _ = rh.outcome(host, graph, keep_cache=False)
        assert status == "success", (run, message)
        rss.append(rh.rss_bytes(host))
        if run in (4, 19):
            states.append(assert_nothing_left_over(host, keep_graph=graph)["states"])
    early, late = float(np.median(rss[2:7])), float(np.median(rss[15:20]))
    print(f"server RSS median runs 3-7: {early / 2**20:.1f} MiB, runs 16-20: {late / 2**20:.1f} MiB ({(late - early) / 2**20:+.1f} MiB)")
    assert late - early < RSS_GROWTH_BOUND, [f"{r / 2**20:.1f}" for r in rss]
    assert states == [1, 1], states  # only the cached apply output's state is alive, not one per run
