"""OpenPose-JSON (`POSE_KEYPOINT` of comfyui_controlnet_aux) <-> (18, 2) body keypoints in an image's pixels.

The format: a list with one dict per image, `{"people": [{"pose_keypoints_2d": [x0, y0, c0, x1, ...]}], "canvas_width": W,
"canvas_height": H}`. Coordinates are canvas pixels, or 0..1 when normalised (detected: every present coordinate <= 1).
Without a canvas size, pixel coordinates are taken as the target image's pixels.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ..errors import TryOnInputError

NUM_BODY_POINTS = 18
INPUT_NAME = "pose_keypoint"


def _error(detail: str) -> TryOnInputError:
    return TryOnInputError(
        f"{INPUT_NAME}: {detail}. Connect the POSE_KEYPOINT output of an OpenPose/DWPose node (comfyui_controlnet_aux), "
        "or leave the input empty to use the pose model."
    )


def _frame(pose_keypoint: Any, image_index: int) -> dict:
    """The dict for one image: the list's item at `image_index`, or the only item / a bare dict for every image."""
    if isinstance(pose_keypoint, str):
        try:
            pose_keypoint = json.loads(pose_keypoint)
        except json.JSONDecodeError as error:
            raise _error(f"the text is not valid JSON ({error.msg})") from error
    if isinstance(pose_keypoint, dict):
        return pose_keypoint
    if not isinstance(pose_keypoint, (list, tuple)) or not pose_keypoint:
        raise _error(
            f"expected a list of pose dicts (one per image), got {type(pose_keypoint).__name__}"
            + (" (empty)" if isinstance(pose_keypoint, (list, tuple)) else "")
        )
    if len(pose_keypoint) == 1:
        frame = pose_keypoint[0]
    elif 0 <= image_index < len(pose_keypoint):
        frame = pose_keypoint[image_index]
    else:
        raise _error(f"it holds {len(pose_keypoint)} poses but image {image_index} of the batch needs one; give one pose per image, or one for all")
    if not isinstance(frame, dict):
        raise _error(f"item {image_index} is a {type(frame).__name__}, not a dict with 'people'")
    return frame


def _canvas_size(frame: dict) -> tuple[float, float] | None:
    width, height = frame.get("canvas_width"), frame.get("canvas_height")
    if width is None and height is None:
        return None
    try:
        width, height = float(width), float(height)
    except (TypeError, ValueError) as error:
        raise _error(f"canvas_width/canvas_height must be numbers, got {width!r} x {height!r}") from error
    if not (math.isfinite(width) and math.isfinite(height)) or width <= 0 or height <= 0:
        raise _error(f"canvas size {width} x {height} is not positive")
    return width, height


def _person_points(person: Any, number: int) -> np.ndarray | None:
    """(18, 3) [x, y, confidence] of one person, or None when the person carries no body keypoints."""
    if not isinstance(person, dict):
        raise _error(f"people[{number}] is a {type(person).__name__}, not a dict with 'pose_keypoints_2d'")
    flat = person.get("pose_keypoints_2d")
    if flat is None or (isinstance(flat, (list, tuple)) and len(flat) == 0):
        return None
    try:
        values = np.asarray(flat, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as error:
        raise _error(f"people[{number}].pose_keypoints_2d must be a flat list of numbers") from error
    if values.size != NUM_BODY_POINTS * 3:
        raise _error(f"people[{number}].pose_keypoints_2d has {values.size} numbers; the 18-point body format needs 54 (x, y, confidence)")
    if not np.isfinite(values).all():
        raise _error(f"people[{number}].pose_keypoints_2d holds NaN or infinite values")
    return values.reshape(NUM_BODY_POINTS, 3)


def keypoints_from_pose_json(pose_keypoint: Any, image_index: int, width: int, height: int) -> np.ndarray | None:
    """The most confident person's (18, 2) float32 keypoints in a width x height image; missing = (0, 0); None if nobody."""
    frame = _frame(pose_keypoint, image_index)
    people = frame.get("people", [])
    if people is None:
        people = []
    if not isinstance(people, (list, tuple)):
        raise _error(f"'people' must be a list, got {type(people).__name__}")
    canvas = _canvas_size(frame)
    candidates = [p for p in (_person_points(person, n) for n, person in enumerate(people)) if p is not None]
    candidates = [p for p in candidates if (p[:, 2] > 0).any()]
    if not candidates:
        return None
    best = max(candidates, key=lambda p: float(p[:, 2].sum()))  # first one wins a tie
    present = best[:, 2] > 0
    xy = best[:, :2].copy()
    if (np.abs(xy[present]) <= 1.0).all():  # normalised to the canvas
        scale_x, scale_y = float(width), float(height)
    elif canvas is not None:
        scale_x, scale_y = width / canvas[0], height / canvas[1]
    else:
        scale_x = scale_y = 1.0
    xy[:, 0] *= scale_x
    xy[:, 1] *= scale_y
    xy[~present] = 0.0
    return xy.astype(np.float32)


def pose_json_from_keypoints(keypoints: list[np.ndarray | None], width: int, height: int) -> list[dict]:
    """One OpenPose-JSON dict per image (pixel coordinates, confidence 1 for present points, 0 for missing (0, 0) ones)."""
    frames = []
    for points in keypoints:
        people = []
        if points is not None:
            points = np.asarray(points, dtype=np.float64).reshape(NUM_BODY_POINTS, 2)
            present = ~((points[:, 0] == 0) & (points[:, 1] == 0))
            flat = np.concatenate([points * present[:, None], present[:, None].astype(np.float64)], axis=1).reshape(-1)
            people.append(
                {"pose_keypoints_2d": [float(v) for v in flat], "face_keypoints_2d": None, "hand_left_keypoints_2d": None, "hand_right_keypoints_2d": None}
            )
        frames.append({"people": people, "canvas_width": int(width), "canvas_height": int(height)})
    return frames
