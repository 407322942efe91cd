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
