"""OpenPose body (COCO-18): the network's input and the decoding of its maps into keypoints (docs/preprocessing.md,
"Pose"). The network itself and its loading are in models/openpose_body.py.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import scipy.ndimage

NUM_PARTS = 18
NUM_HEATMAPS = NUM_PARTS + 1  # 18 parts + background
NUM_PAFS = 38  # 19 limbs x (x, y)
STRIDE = 8
BOX_SIZE = 368
SCALE = 0.5
PAD_VALUE = 128
PEAK_THRESHOLD = 0.1
PAF_THRESHOLD = 0.05
PAF_SAMPLES = 10
GAUSSIAN_SIGMA = 3.0

# COCO-18 order: 0 nose, 1 neck, 2 r-shoulder, 3 r-elbow, 4 r-wrist, 5 l-shoulder, 6 l-elbow, 7 l-wrist, 8 r-hip, 9 r-knee,
# 10 r-ankle, 11 l-hip, 12 l-knee, 13 l-ankle, 14 r-eye, 15 l-eye, 16 r-ear, 17 l-ear.
# The 19 limbs (part A -> part B, 0-based) in OpenPose's order, and the two PAF channels (x, y) that score each one.
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2),
    (1, 5),
    (2, 3),
    (3, 4),
    (5, 6),
    (6, 7),
    (1, 8),
    (8, 9),
    (9, 10),
    (1, 11),
    (11, 12),
    (12, 13),
    (1, 0),
    (0, 14),
    (14, 16),
    (0, 15),
    (15, 17),
    (2, 16),
    (5, 17),
)
LIMB_PAF_CHANNELS: tuple[tuple[int, int], ...] = (
    (12, 13),
    (20, 21),
    (14, 15),
    (16, 17),
    (22, 23),
    (24, 25),
    (0, 1),
    (2, 3),
    (4, 5),
    (6, 7),
    (8, 9),
    (10, 11),
    (28, 29),
    (30, 31),
    (34, 35),
    (32, 33),
    (36, 37),
    (18, 19),
    (26, 27),
)
# Limbs from index 17 on (ear-shoulder links) only join parts to existing people; they never start a new one.
FIRST_NON_SEEDING_LIMB = 17


# ----------------------------------------------------------------------------------------------
# Pre-processing and the network maps
# ----------------------------------------------------------------------------------------------
def prepare_input(image_bgr: np.ndarray) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """Scales so the height is 368 x 0.5 (cubic), pads right/bottom to a multiple of 8 with 128, normalises x/256 - 0.5.

    Returns the (1, 3, H8, W8) float32 input, the scaled size (h, w) before padding and the padded size (H8, W8)."""
    height = image_bgr.shape[0]
    scale = SCALE * BOX_SIZE / height
    scaled = cv2.resize(image_bgr, (0, 0), fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    h, w = scaled.shape[:2]
    pad_bottom, pad_right = (-h) % STRIDE, (-w) % STRIDE
    padded = cv2.copyMakeBorder(scaled, 0, pad_bottom, 0, pad_right, cv2.BORDER_CONSTANT, value=(PAD_VALUE, PAD_VALUE, PAD_VALUE))
    batch = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], dtype=np.float32) / 256.0 - 0.5
    return batch, (h, w), padded.shape[:2]


def upsample_maps(maps: np.ndarray, scaled_hw: tuple[int, int], size_hw: tuple[int, int]) -> np.ndarray:
    """(C, h, w) network maps -> (H, W, C) at the image size: x8 cubic, padding cropped off, cubic to the image size."""
    hwc = np.ascontiguousarray(maps.transpose(1, 2, 0), dtype=np.float32)
    up = cv2.resize(hwc, (0, 0), fx=STRIDE, fy=STRIDE, interpolation=cv2.INTER_CUBIC)
    if up.ndim == 2:
        up = up[:, :, None]
    up = np.ascontiguousarray(up[: scaled_hw[0], : scaled_hw[1]])
    out = cv2.resize(up, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_CUBIC)
    return out[:, :, None] if out.ndim == 2 else out


# ----------------------------------------------------------------------------------------------
# Decoding: peaks, limbs, people
# ----------------------------------------------------------------------------------------------
def find_peaks(heatmaps: np.ndarray, threshold: float = PEAK_THRESHOLD, sigma: float = GAUSSIAN_SIGMA) -> list[np.ndarray]:
    """Per part, the (n, 4) peaks [x, y, score, id] of the smoothed heatmap above `threshold` that are >= their 4 neighbours.

    Scores are read from the unsmoothed map; ids number all peaks consecutively over the parts (part 0 first)."""
    peaks, next_id = [], 0
    for part in range(NUM_PARTS):
        raw = heatmaps[:, :, part].astype(np.float32)
        smooth = scipy.ndimage.gaussian_filter(raw, sigma=sigma)
        padded = np.pad(smooth, 1, mode="constant", constant_values=0)
        centre = padded[1:-1, 1:-1]
        is_peak = (
            (centre >= padded[:-2, 1:-1]) & (centre >= padded[2:, 1:-1]) & (centre >= padded[1:-1, :-2]) & (centre >= padded[1:-1, 2:]) & (centre > threshold)
        )
        ys, xs = np.nonzero(is_peak)
        order = np.lexsort((xs, ys))  # row-major, as np.nonzero already gives
        xs, ys = xs[order], ys[order]
        ids = np.arange(next_id, next_id + len(xs))
        next_id += len(xs)
        peaks.append(np.stack([xs, ys, raw[ys, xs], ids], axis=1).astype(np.float64) if len(xs) else np.zeros((0, 4)))
    return peaks


def score_limb_candidates(cand_a: np.ndarray, cand_b: np.ndarray, paf_xy: np.ndarray, image_height: int) -> np.ndarray:
    """All A->B pairs that pass: > 80 % of 10 PAF samples along the segment above 0.05, and a positive mean score with the
    distance prior min(0.5 H / length - 1, 0). Rows [i, j, score], best first."""
    a = cand_a[:, None, :2]
    b = cand_b[None, :, :2]
    vec = b - a  # (nA, nB, 2)
    norm = np.maximum(np.sqrt((vec**2).sum(-1)), 1e-3)
    unit = vec / norm[..., None]
    t = np.linspace(0.0, 1.0, PAF_SAMPLES)
    xs = a[..., 0:1] + (b[..., 0:1] - a[..., 0:1]) * t  # (nA, nB, samples)
    ys = a[..., 1:2] + (b[..., 1:2] - a[..., 1:2]) * t
    h, w = paf_xy.shape[:2]
    cols = np.clip(np.round(xs).astype(int), 0, w - 1)
    rows = np.clip(np.round(ys).astype(int), 0, h - 1)
    samples = paf_xy[:, :, 0][rows, cols] * unit[..., 0:1] + paf_xy[:, :, 1][rows, cols] * unit[..., 1:2]
    score = samples.mean(-1) + np.minimum(0.5 * image_height / norm - 1.0, 0.0)
    ok = ((samples > PAF_THRESHOLD).sum(-1) > 0.8 * PAF_SAMPLES) & (score > 0)
    i, j = np.nonzero(ok)
    rows_out = np.stack([i, j, score[i, j]], axis=1) if len(i) else np.zeros((0, 3))
    return rows_out[np.argsort(-rows_out[:, 2], kind="stable")]


def connect_limbs(peaks: list[np.ndarray], pafs: np.ndarray, image_height: int, interrupt: Callable[[], None] | None = None) -> list[np.ndarray | None]:
    """Per limb, the greedy one-to-one connections [id_a, id_b, score, i, j] (best scores first); None where a part has no peak.

    `interrupt` is called before each limb (it raises to stop a long decoding)."""
    connections: list[np.ndarray | None] = []
    for (part_a, part_b), (cx, cy) in zip(LIMBS, LIMB_PAF_CHANNELS, strict=True):
        if interrupt is not None:
            interrupt()
        cand_a, cand_b = peaks[part_a], peaks[part_b]
        if len(cand_a) == 0 or len(cand_b) == 0:
            connections.append(None)
            continue
        candidates = score_limb_candidates(cand_a, cand_b, pafs[:, :, [cx, cy]], image_height)
        chosen, used_a, used_b = [], set(), set()
        for i, j, s in candidates:
            i, j = int(i), int(j)
            if i in used_a or j in used_b:
                continue
            chosen.append([cand_a[i, 3], cand_b[j, 3], s, i, j])
            used_a.add(i)
            used_b.add(j)
            if len(chosen) >= min(len(cand_a), len(cand_b)):
                break
        connections.append(np.array(chosen, dtype=np.float64).reshape(-1, 5))
    return connections


def assemble_people(peaks: list[np.ndarray], connections: list[np.ndarray | None]) -> np.ndarray:
    """People as rows of 20: the peak id per part (-1 = missing), total score, part count. Creation order is kept;
    people with fewer than 4 parts or a mean score below 0.4 are dropped."""
    all_peaks = np.concatenate([p for p in peaks if len(p)], axis=0) if any(len(p) for p in peaks) else np.zeros((0, 4))
    peak_score = dict(zip(all_peaks[:, 3].astype(int).tolist(), all_peaks[:, 2].tolist(), strict=True))
    people: list[np.ndarray] = []
    for k, ((part_a, part_b), limb) in enumerate(zip(LIMBS, connections, strict=True)):
        if limb is None:
            continue
        for id_a, id_b, score, _, _ in limb:
            found = [n for n, person in enumerate(people) if person[part_a] == id_a or person[part_b] == id_b][:2]
            if len(found) == 1:
                person = people[found[0]]
                if person[part_b] != id_b:
                    person[part_b] = id_b
                    person[-1] += 1
                    person[-2] += peak_score[int(id_b)] + score
            elif len(found) == 2:
                first, second = people[found[0]], people[found[1]]
                overlap = ((first[:-2] >= 0) & (second[:-2] >= 0)).any()
                if not overlap:  # two fragments of one person: merge them
                    first[:-2] += second[:-2] + 1
                    first[-2:] += second[-2:]
                    first[-2] += score
                    del people[found[1]]
                else:
                    first[part_b] = id_b
                    first[-1] += 1
                    first[-2] += peak_score[int(id_b)] + score
            elif k < FIRST_NON_SEEDING_LIMB:
                person = -np.ones(NUM_PARTS + 2)
                person[part_a], person[part_b] = id_a, id_b
                person[-1] = 2
                person[-2] = peak_score[int(id_a)] + peak_score[int(id_b)] + score
                people.append(person)
    kept = [p for p in people if p[-1] >= 4 and p[-2] / p[-1] >= 0.4]
    return np.array(kept, dtype=np.float64).reshape(-1, NUM_PARTS + 2)


def decode_people(heatmaps: np.ndarray, pafs: np.ndarray, interrupt: Callable[[], None] | None = None) -> list[np.ndarray]:
    """Every person found, in OpenPose's order, as (18, 3) float32 [x, y, score]; missing parts are (0, 0, 0)."""
    if heatmaps.ndim != 3 or heatmaps.shape[2] < NUM_PARTS or pafs.shape[:2] != heatmaps.shape[:2] or pafs.shape[2] != NUM_PAFS:
        raise ValueError(f"decode_people needs (H,W,>=18) heatmaps and (H,W,38) PAFs, got {heatmaps.shape} and {pafs.shape}")
    peaks = find_peaks(heatmaps)
    connections = connect_limbs(peaks, pafs, heatmaps.shape[0], interrupt)
    people = assemble_people(peaks, connections)
    by_id = {int(p[3]): p for part in peaks for p in part}
    out = []
    for person in people:
        points = np.zeros((NUM_PARTS, 3), dtype=np.float32)
        for part in range(NUM_PARTS):
            if person[part] >= 0:
                points[part] = by_id[int(person[part])][:3]
        out.append(points)
    return out


def decode_keypoints(heatmaps: np.ndarray, pafs: np.ndarray, interrupt: Callable[[], None] | None = None) -> np.ndarray | None:
    """The first person (as IDM-VTON takes `subset[0]`) as (18, 2) float32 pixel (x, y), missing = (0, 0); None if nobody."""
    people = decode_people(heatmaps, pafs, interrupt)
    if not people:
        return None
    return np.ascontiguousarray(people[0][:, :2])
