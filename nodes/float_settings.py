"""The FLOAT inputs of a node, checked where it receives them: at validation (widget values) and when it runs (links).

A node lists its FLOAT inputs in `validate_inputs`, which then gets their widget values (None for a linked input,
known only when the node runs). ComfyUI skips its own min/max check for every input `validate_inputs` names, so
`validate_floats` checks the schema's range as well as finiteness. When the node runs, `preprocess.settings.check_finite`
(called by its pipeline, or by `execute`) refuses a non-finite value that came through a link (its range is not
checked, as ComfyUI never checks linked values).
"""

from __future__ import annotations

from comfy_api.latest import io

from ..preprocess.settings import setting_problem


def float_ranges(node: type[io.ComfyNode]) -> dict[str, tuple[float | None, float | None]]:
    """{input id: (min, max)} of the node's FLOAT inputs, from its schema (`define_schema`: ComfyUI calls
    `validate_inputs` on a locked copy of the class, on which `GET_SCHEMA` cannot record what it finalises)."""
    return {i.id: (i.min, i.max) for i in node.define_schema().inputs if isinstance(i, io.Float.Input)}


def validate_floats(node: type[io.ComfyNode], **values) -> bool | str:
    """For `validate_inputs`: True, or the message naming the first FLOAT widget value that is not finite or in range."""
    ranges = float_ranges(node)
    for name, value in values.items():
        problem = None if value is None else setting_problem(name, value, *ranges[name])
        if problem:
            return problem
    return True
