"""Evaluation: the official DCASE2026 Task 3 metric (:mod:`.metric`, fast; its parts
:mod:`.rendering`, :mod:`.matching`, :mod:`.files`), its straightforward
oracle (:mod:`.reference`) and the older baseline metric (:mod:`.baseline_metric`); pure
numpy/scipy, no Detectron2."""

from .metric import (
    THRESHOLDS,
    MetricError,
    evaluate_annotations,
    evaluate_folders,
    render_annotation,
    render_annotations,
)

__all__ = [
    "THRESHOLDS",
    "MetricError",
    "evaluate_annotations",
    "evaluate_folders",
    "render_annotation",
    "render_annotations",
]
