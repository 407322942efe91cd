"""Shared fixtures: small generated signals and wav files (never downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from seld_d2.acoustics.geometry import em32_positions
from seld_d2.acoustics.render import render_plane_wave

FS = 24000


def plane_wave_em32(az: float, el: float, seconds: float = 0.3, seed: int = 0) -> np.ndarray:
    """White noise arriving from (az, el) at the 32 em32 capsules, (num_samples, 32)."""
    rng = np.random.default_rng(seed)
    return render_plane_wave(rng.standard_normal(int(seconds * FS)), az, el, em32_positions(), FS)


def write_wav(path, audio: np.ndarray, fs: int = FS, subtype: str = "FLOAT") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, fs, subtype=subtype)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _dump(path, data) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def official_cases_folders(root, seed: int = 11) -> tuple:
    """A prediction and a ground-truth folder holding every input the official evaluator scores
    though the project's writers never write it (SPEC §2.7); returns ``(pred_dir, gt_dir)``.

    Clips fold4_room{k}_mix001 from ``seld_d2.evaluation.synthetic.synthetic_case``: room0's GT
    lies one folder below ``gt/``; room2's GT has no prediction file; room3's GT is a plain
    ``<clip>.json`` (not paired); room9's prediction has no GT; ``.hidden.json`` is not JSON at all
    (ignored).
    """
    from seld_d2.evaluation.synthetic import synthetic_case

    pred, gt = synthetic_case(seed, clips=4, frames=16)
    pred["fold4_room9_mix001"] = pred["fold4_room3_mix001"]
    pred_dir, gt_dir = root / "pred", root / "gt"
    gt_paths = {
        "fold4_room0_mix001": gt_dir / "dev-test-sony" / "fold4_room0_mix001_std.json",
        "fold4_room1_mix001": gt_dir / "fold4_room1_mix001_std.json",
        "fold4_room2_mix001": gt_dir / "fold4_room2_mix001_std.json",
        "fold4_room3_mix001": gt_dir / "fold4_room3_mix001.json",
    }
    for clip, path in gt_paths.items():
        anns = [a.to_json() for a in gt[clip]]
        if clip == "fold4_room0_mix001":
            anns[0]["segmentation"] = []  # an older STAIRS26 script's event under the threshold
            del anns[1]["segmentation"]
            del anns[2]["distance"]
            anns[3]["category_id"] = 13  # dropped
            anns[4]["segmentation"].insert(0, [])  # an empty polygon: renders as nothing
            anns.append(dict(anns[5]))  # the newer script's per-contour copy: counts twice
        _dump(path, {"annotations": anns, "info": {"version": 2}})
    for clip in ("fold4_room0_mix001", "fold4_room1_mix001", "fold4_room3_mix001", "fold4_room9_mix001"):
        anns = [a.to_json() for a in pred[clip]]
        if clip == "fold4_room0_mix001":
            for a in anns[:3]:
                del a["score"]  # ranks at 0
            anns[3]["metadata_frame_index"] = float(anns[3]["metadata_frame_index"])  # int(3.0)
            anns[4]["metadata_frame_index"] = str(anns[4]["metadata_frame_index"])  # int("3")
            anns[5]["category_id"] = anns[5]["category_id"] + 0.7  # int() truncates
            anns[6]["segmentation"] = []  # a false positive at its score
            del anns[7]["segmentation"]
            anns[8]["category_id"] = 13  # dropped
            anns[9]["segmentation"][0][0][2] = 1.5  # v is not range-checked
            del anns[10]["instance_id"], anns[10]["distance"]  # not read
        _dump(pred_dir / f"{clip}.json", {"annotations": anns, "model": "x"})
    (pred_dir / ".hidden.json").write_text("{not json")
    return pred_dir, gt_dir
