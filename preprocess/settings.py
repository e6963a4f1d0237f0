"""Number settings of the nodes: the one check that a FLOAT setting is a finite number within its range.

ComfyUI 0.3.75 converts a prompt's `"NaN"` or `"inf"` to a float and its min/max check lets NaN through (every
comparison with NaN is false), so a NaN strength or cfg reached the sampler and gave a black image with no error.
"""

from __future__ import annotations

import math

from ..errors import TryOnInputError


def setting_problem(name: str, value, minimum: float | None = None, maximum: float | None = None) -> str | None:
    """Why `value` is not a usable setting `name` (not a number, NaN or infinite, outside [minimum, maximum]), or None."""
    span = f" from {minimum} to {maximum}" if minimum is not None and maximum is not None else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{name}: {value!r} is not a number. Set a number{span}."
    if not math.isfinite(value):
        return f"{name}: {value} is not a finite number (NaN or infinity), which would give a black or broken image. Set a number{span}."
    if minimum is not None and value < minimum or maximum is not None and value > maximum:
        return f"{name}: {value} is outside its range. Set a number{span}."
    return None


def check_finite(**settings) -> None:
    """Raises a TryOnInputError naming the first setting that is not a finite number (None = not given: skipped)."""
    for name, value in settings.items():
        problem = None if value is None else setting_problem(name, value)
        if problem:
            raise TryOnInputError(problem)
