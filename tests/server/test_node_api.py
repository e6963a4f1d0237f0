"""Node-id stability: the running server's node ids, inputs and outputs match tests/data/node_api.json exactly.

Also: a workflow that names an old or renamed node id gets ComfyUI's validation error naming that id, and the
server keeps working.
"""

from __future__ import annotations

import node_api
import reliability_host as rh


def test_node_ids_inputs_and_outputs_match_the_committed_list(host):
    current = node_api.node_api(host.get_json("/object_info"), node_api.pack_node_ids())
    found = node_api.differences(node_api.committed_api(), current)
    assert not found, "\n".join(found + [node_api.UPDATE_HINT])


def test_the_check_catches_a_rename_a_removal_and_an_addition():
    committed = node_api.committed_api()
    node_id = "IDMVTONApply"
    renamed = {
        **committed,
        node_id: {**committed[node_id], "required": {("person" if k == "person_image" else k): v for k, v in committed[node_id]["required"].items()}},
    }
    found = node_api.differences(committed, renamed)
    assert any("'person_image' was removed or renamed" in f for f in found) and any("'person' is new" in f for f in found)
    removed = {k: v for k, v in committed.items() if k != node_id}
    assert any("'IDMVTONApply' was removed or renamed" in f for f in node_api.differences(committed, removed))
    added = {**committed, "TryOnSomethingNew": {"required": {}, "optional": {}, "outputs": []}}
    assert any("'TryOnSomethingNew' is new" in f for f in node_api.differences(committed, added))
    retyped = {**committed, node_id: {**committed[node_id], "outputs": committed[node_id]["outputs"][::-1]}}
    assert any("outputs changed" in f for f in node_api.differences(committed, retyped))


def test_a_workflow_with_an_old_node_id_is_rejected_by_name_and_the_server_recovers(host):
    graph = rh.graph()
    graph["apply"]["class_type"] = "IDMVTONApplyV0"  # a node id this pack never had (e.g. from a renamed node)
    status, message, answer = rh.outcome(host, graph)
    assert status == "rejected", message
    assert answer["error"]["type"] == "invalid_prompt", answer
    assert "node IDMVTONApplyV0 does not exist" in answer["error"]["message"], answer
    rh.assert_recovers(host)
