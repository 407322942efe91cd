"""ClipExporter built from SELD.INFER (Detectron2's @configurable: from_config gives the keyword
arguments, ClipExporter(cfg) builds)."""

from detectron2.config import get_cfg

from seld_d2.config import add_seld_config
from seld_d2.inference.submission import ClipExporter


def test_from_config_gives_keyword_arguments_and_cfg_builds():
    cfg = add_seld_config(get_cfg())
    cfg.SELD.INFER.SCORE_THRESH, cfg.SELD.INFER.CLASS_SCORE_THRESH = 0.4, [[3, 0.9]]
    kwargs = ClipExporter.from_config(cfg)
    assert isinstance(kwargs, dict)
    assert kwargs["score_thresh"] == 0.4 and kwargs["class_thresh"] == {3: 0.9}
    assert kwargs["max_bytes"] == int(cfg.SELD.INFER.MAX_FILE_MB * 2**20)
    built, direct = ClipExporter(cfg), ClipExporter(**kwargs)
    for name in ("select_kw", "tracker_kw", "export_kw", "max_bytes"):
        assert getattr(built, name) == getattr(direct, name), name


def test_the_config_defaults_reach_each_stage():
    # The values test_postprocess, test_tracker and test_export use as "SELD.INFER's defaults".
    exporter = ClipExporter(add_seld_config(get_cfg()))
    assert exporter.select_kw == {
        "score_thresh": 0.70,
        "class_thresh": {12: 0.85},
        "nms_thresh": 0.5,
        "max_per_class": None,
    }
    assert exporter.tracker_kw == {
        "min_age": 2,
        "max_missed": 2,
        "iou_thresh": 0.3,
        "coast_score_decay": None,
    }
    assert exporter.export_kw == {"mode": "dense", "dense_thr": 0.5, "step": 1, "num_peaks": 20}
    assert exporter.max_bytes == 20 * 2**20
