"""`make run`'s workflow choice: the default, any shipped workflow by name, and a clear error for anything else."""

from __future__ import annotations

import pathlib
import subprocess

import pytest
import run_example

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_workflow_names_resolve_to_the_shipped_files():
    assert run_example.workflow_path(run_example.DEFAULT_WORKFLOW) == REPO / "workflows" / "idm_vton_upper_body.json"
    for path in (REPO / "workflows").glob("*.json"):
        assert run_example.workflow_path(path.stem) == path
        assert run_example.workflow_path(path.name) == path


@pytest.mark.parametrize("name", ["nope", "../README", "/etc/passwd", ".json"])
def test_other_names_are_refused_with_the_shipped_list(name):
    with pytest.raises(SystemExit) as caught:
        run_example.workflow_path(name)
    message = str(caught.value)
    assert message.startswith("WORKFLOW=") and "ootd_dc" in message and "idm_vton_upper_body" in message


def test_make_run_passes_the_workflow_variable():
    dry_run = subprocess.run(["make", "-n", "run", "WORKFLOW=ootd_dc"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "tools/run_example.py ootd_dc" in dry_run
