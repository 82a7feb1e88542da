"""Detection post-processing on the host: ONNX NonMaxSuppression as a numpy function.

Why not a graph op: NonMaxSuppression's output size depends on the scores (how many boxes
survive), and the native engine plans every tensor's shape before it runs, so it keeps
post-processing on the host, as TFLite's and most edge runtimes' detection examples do. A
detector exported with NonMaxSuppression at its end converts up to the op's inputs
(``pyengine convert model.onnx -o det.pyem --output-node boxes --output-node scores``), and the
application calls :func:`non_max_suppression` on what the model returns. The results are the
op's, index for index (tests/test_detection.py compares them with onnxruntime's).
"""

from __future__ import annotations

import numpy as np

__all__ = ["non_max_suppression"]


def _corners(boxes: np.ndarray, center_point_box: int) -> tuple[np.ndarray, ...]:
    """(x_min, y_min, x_max, y_max) of each box, in the boxes' dtype."""
    if center_point_box == 0:  # [y1, x1, y2, x2], either corner order
        y1, x1, y2, x2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
        return np.minimum(x1, x2), np.minimum(y1, y2), np.maximum(x1, x2), np.maximum(y1, y2)
    cx, cy = boxes[:, 0], boxes[:, 1]
    half_w, half_h = boxes[:, 2] / 2, boxes[:, 3] / 2
    return cx - half_w, cy - half_h, cx + half_w, cy + half_h


def _check(boxes: np.ndarray, scores: np.ndarray, center_point_box: int) -> None:
    if boxes.ndim != 3 or boxes.shape[2] != 4:
        raise ValueError(f"boxes must have shape [batches, boxes, 4], got {list(boxes.shape)}")
    if scores.ndim != 3 or scores.shape[0] != boxes.shape[0] or scores.shape[2] != boxes.shape[1]:
        raise ValueError(f"scores must have shape [batches, classes, boxes] = "
                         f"[{boxes.shape[0]}, C, {boxes.shape[1]}] for boxes {list(boxes.shape)}, "
                         f"got {list(scores.shape)}")
    if center_point_box not in (0, 1):
        raise ValueError(f"center_point_box must be 0 ([y1, x1, y2, x2]) or 1 ([x_center, "
                         f"y_center, width, height]), got {center_point_box!r}")


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, max_output_boxes_per_class: int = 0,
                        iou_threshold: float = 0.0, score_threshold: float | None = None,
                        center_point_box: int = 0) -> np.ndarray:
    """Greedy non-maximum suppression per batch and class, as ONNX's NonMaxSuppression.

    Parameters
    ----------
    boxes
        ``[batches, boxes, 4]`` floats: ``[y1, x1, y2, x2]`` (any diagonal corner pair) when
        ``center_point_box`` is 0, ``[x_center, y_center, width, height]`` when 1.
    scores
        ``[batches, classes, boxes]``.
    max_output_boxes_per_class
        At most this many boxes per batch and class; 0 (ONNX's default) selects none.
    iou_threshold
        A box is dropped when its intersection over union with a box already selected in its
        class is above this.
    score_threshold
        Only boxes scoring above this are candidates (None: all).
    center_point_box
        The box format, as above.

    Returns
    -------
    ``[selected, 3]`` int64 rows of ``(batch, class, box)``: batch by batch, class by class, and
    within a class by descending score (ties: the lower box index first).

    Raises
    ------
    ValueError
        Shapes that do not fit together, or a ``center_point_box`` other than 0 or 1.
    """
    boxes = np.asarray(boxes)
    scores = np.asarray(scores)
    _check(boxes, scores, center_point_box)
    limit = max(int(max_output_boxes_per_class), 0)
    rows: list[np.ndarray] = []
    if limit == 0:
        return np.empty((0, 3), np.int64)
    for b in range(boxes.shape[0]):
        x0, y0, x1, y1 = _corners(boxes[b], center_point_box)
        area = (x1 - x0) * (y1 - y0)
        for c in range(scores.shape[1]):
            s = scores[b, c]
            candidates = np.arange(s.shape[0]) if score_threshold is None else \
                np.flatnonzero(s > score_threshold)
            # Descending score, the lower index first among equal scores (a stable sort).
            order = candidates[np.argsort(-s[candidates], kind="stable")]
            kept: list[int] = []
            while order.size and len(kept) < limit:
                top, rest = int(order[0]), order[1:]
                kept.append(top)
                iw = np.minimum(x1[top], x1[rest]) - np.maximum(x0[top], x0[rest])
                ih = np.minimum(y1[top], y1[rest]) - np.maximum(y0[top], y0[rest])
                inter = iw * ih
                union = area[top] + area[rest] - inter
                # As the op: no overlap (or an empty box) never suppresses.
                with np.errstate(divide="ignore", invalid="ignore"):
                    suppress = (iw > 0) & (ih > 0) & (inter > 0) & (area[top] > 0) & (area[rest] > 0) & \
                        (union > 0) & (inter / union > iou_threshold)
                order = rest[~suppress]
            if kept:
                rows.append(np.stack([np.full(len(kept), b), np.full(len(kept), c), np.asarray(kept)], 1))
    return np.concatenate(rows).astype(np.int64) if rows else np.empty((0, 3), np.int64)
