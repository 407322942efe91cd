"""Stairs26Evaluator built from a config (Detectron2's @configurable)."""

from detectron2.config import get_cfg

from seld_d2.config import add_seld_config
from seld_d2.evaluation.evaluator import Stairs26Evaluator


def test_built_from_a_config():
    cfg = add_seld_config(get_cfg())
    cfg.SELD.INFER.NMS_THRESH = 0.25
    kwargs = Stairs26Evaluator.from_config(cfg, "some_dataset", output_dir="out")
    assert set(kwargs) == {"dataset_name", "exporter", "output_dir"}
    ev = Stairs26Evaluator(cfg, "some_dataset", "out")
    assert (ev.dataset_name, ev.output_dir) == ("some_dataset", "out")
    assert ev.exporter.select_kw["nms_thresh"] == 0.25
