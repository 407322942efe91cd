import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from seld_d2.acoustics.features import write_cache
from seld_d2.data.classes import CLASS_COLORS
from seld_d2.data.labels import Annotation, load_labels, write_labels
from seld_d2.utils import visualize as V

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import visualize as tool  # noqa: E402
from test_datasets import SPLIT, make_clip  # noqa: E402

SEQ = "fold4_room1_mix001"


def blob(cx: int, cy: int, r: int = 5, cat: int = 3, inst: int = 0, score: float | None = None) -> Annotation:
    """A dense disc of [x, y, v] triplets peaking (v = 1) at (cx, cy), energy falling outwards."""
    d = np.arange(-r, r + 1)
    dy, dx = (a.ravel() for a in np.meshgrid(d, d, indexing="ij"))
    keep = dx * dx + dy * dy <= r * r
    v = 1.0 - 0.7 * np.hypot(dx[keep], dy[keep]) / r
    pts = np.column_stack([np.mod(cx + dx[keep], 360), cy + dy[keep], v]).astype(np.float32)
    return Annotation(0, inst, cat, 100.0, [pts], score)


def test_overlay_puts_class_colour_at_energy_peak():
    black = np.zeros((180, 360, 3), np.uint8)
    ann = blob(200, 80, cat=3)
    colour = np.array(CLASS_COLORS[3])
    full = V.overlay_annotations(black, [ann], alpha=1.0, labels=False)
    assert full.shape == (180, 360, 3) and full.dtype == np.uint8
    np.testing.assert_array_equal(full[80, 200], colour)
    # Opacity follows the energy: the default alpha at the peak, fainter towards the edge.
    img = V.overlay_annotations(black, [ann], labels=False)
    np.testing.assert_array_equal(img[80, 200], np.rint(0.6 * colour))
    assert img[80, 204].sum() < img[80, 200].sum()
    # The outline lies just outside the support; far away the frame is untouched.
    np.testing.assert_array_equal(img[80, 206], colour)
    assert not img[20, 20].any()
    # With a label (above the instance) the peak pixel is unchanged, and the scale upsamples.
    labelled = V.overlay_annotations(black, [ann], scale=2)
    assert labelled.shape == (360, 720, 3)
    np.testing.assert_array_equal(labelled[160:162, 400:402], img[80:81, 200:201].repeat(2, 0).repeat(2, 1))
    assert (labelled[:148] != 0).any()  # label text above the box


def test_sparse_and_seam_crossing_instances_are_visible():
    black = np.zeros((180, 360, 3), np.uint8)
    point = {"category_id": 8, "instance_id": 2, "score": 0.87, "segmentation": [np.array([[359, 90, 0.5]])]}
    e = V.annotation_energy(point)
    assert e.max() == 1.0 and (e > 0).sum() == 29  # a disc of radius 3 around a single point
    assert e[90, 0] == 1.0 and e[90, 2] == 1.0 and e[90, 356] == 1.0  # wraps across the seam
    img = V.overlay_annotations(black, [point], show_score=True)
    np.testing.assert_array_equal(img[90, 359], np.rint(0.6 * np.array(CLASS_COLORS[8])))
    assert V.instance_label(point, show_score=True) == "Music 0.87 #2"
    assert V.instance_label(point) == "Music #2"
    # A dense instance straddling the seam keeps both sides, outlined on both.
    seam = blob(0, 60, r=6, cat=0)
    img = V.overlay_annotations(black, [seam], alpha=1.0, labels=False)
    red = np.array(CLASS_COLORS[0])
    np.testing.assert_array_equal(img[60, 0], red)
    assert img[60, 354].any() and img[60, 6].any()  # both sides of the seam are filled
    np.testing.assert_array_equal(img[60, 353], red)  # and outlined one pixel past the support
    np.testing.assert_array_equal(img[60, 7], red)
    # A full-canvas energy map (a model's output form) works as well.
    energy = np.zeros((180, 360), np.float32)
    energy[10:20, 100:110] = 0.5
    np.testing.assert_array_equal(
        V.overlay_annotations(black, [{"category_id": 1, "energy": energy}], alpha=1.0)[15, 105],
        CLASS_COLORS[1],
    )


def test_side_by_side_layout():
    a = np.full((180, 360, 3), 50, np.uint8)
    b = np.full((180, 360, 3), 200, np.uint8)
    out = V.side_by_side([a, b], titles=["gt", "pred"], header="frame 3", gap=4, font_size=11)
    assert out.shape == (180 + 2 * 17, 724, 3)
    np.testing.assert_array_equal(out[-1, 0], [50, 50, 50])
    np.testing.assert_array_equal(out[-1, 364], [200, 200, 200])
    with pytest.raises(ValueError, match="same height"):
        V.side_by_side([a, b[:100]])


def make_inputs(tmp_path: Path, frames: int = 5, **kwargs) -> Path:
    """A tiny clip with labels, a prediction file built from them and a feature cache."""
    make_clip(tmp_path, SEQ, frames=frames, **kwargs)
    preds = load_labels(tmp_path / "labels_dev" / SPLIT / f"{SEQ}_std.json")
    for i, a in enumerate(preds):
        a.score = 0.9 - 0.1 * i
    pred_dir = tmp_path / "pred"
    write_labels(pred_dir / f"{SEQ}.json", preds)
    rng = np.random.default_rng(0)
    latent = rng.random((frames, 16, 484)).astype(np.float16)
    meta = {"num_frames": frames, "bands": "mel16", "band_centres": list(np.linspace(50, 4500, 16))}
    write_cache(tmp_path / "features_dev" / SPLIT / f"{SEQ}.npz", latent, meta)
    return pred_dir


def test_tool_writes_pngs_animations_and_features(tmp_path, capsys):
    pred_dir = make_inputs(tmp_path)
    out = tmp_path / "vis"
    args = [
        "--root",
        str(tmp_path),
        "--split",
        SPLIT,
        "--seq",
        SEQ,
        "--pred",
        str(pred_dir),
        "--out",
        str(out),
    ]
    rc = tool.main(args + ["--every", "1", "--gif", "--mp4", "--features", "--feature-frame", "2"])
    assert rc == 0
    pngs = sorted(p.name for p in out.glob(f"{SEQ}_0*.png"))
    assert pngs == [f"{SEQ}_{k:04d}.png" for k in range(5)]
    with Image.open(out / f"{SEQ}_0001.png") as im:
        assert im.width > 2 * 360  # two panels: ground truth | prediction
    with Image.open(out / f"{SEQ}.gif") as gif:
        assert gif.n_frames == 5
        # Each animation frame: header, GT | prediction; frame 1's telephone is in both panels.
        gif.seek(1)
        frame = np.asarray(gif.convert("RGB")).astype(int)
    blue = np.array(CLASS_COLORS[3])
    top = frame.shape[0] - 180
    for x0 in (0, 364):
        assert np.abs(frame[top + 80, x0 + 200] - np.rint(0.6 * blue)).max() <= 12  # GIF palette
    with av.open(str(out / f"{SEQ}.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 5
    assert (out / f"{SEQ}_features_0002.png").is_file()
    printed = capsys.readouterr().out
    assert str(out / f"{SEQ}.gif") in printed and str(out / f"{SEQ}_features_0002.png") in printed
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporaries


def test_tool_bad_input_is_one_line_and_exit_1(tmp_path, capsys):
    make_inputs(tmp_path)
    base = ["--root", str(tmp_path), "--split", SPLIT, "--seq", SEQ, "--out", str(tmp_path / "vis")]
    missing = tmp_path / "nowhere"
    assert tool.main(base + ["--pred", str(missing)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {missing / (SEQ + '.json')}: prediction file not found"
    assert tool.main(base + ["--frames", "1,7"]) == 1
    assert "frame 7 is outside the clip's frames 0-4" in capsys.readouterr().err
    assert tool.main(["--root", str(tmp_path), "--split", SPLIT, "--seq", "nope"]) == 1
    assert "nope_std.json: label file not found" in capsys.readouterr().err
    (tmp_path / "features_dev" / SPLIT / f"{SEQ}.npz").unlink()
    assert tool.main(base + ["--frames", "1", "--features"]) == 1
    assert f"{SEQ}.npz: feature cache not found" in capsys.readouterr().err
    assert not (tmp_path / "vis").exists()  # checks come before anything is drawn
    with pytest.raises(SystemExit) as exc:
        tool.main(["--help"])
    assert exc.value.code == 0


def test_tool_draws_missing_frames_black_with_one_warning(tmp_path, capsys):
    make_inputs(tmp_path, skip_frame=2)
    (tmp_path / "frames_dev" / SPLIT / SEQ / f"{SEQ}_0003.png").unlink()
    out = tmp_path / "vis"
    rc = tool.main(
        ["--root", str(tmp_path), "--split", SPLIT, "--seq", SEQ, "--frames", "", "--gif"]
        + ["--out", str(out)]
    )
    assert rc == 0
    err = capsys.readouterr().err
    assert err.count("frame not found") == 1 and f"{SEQ}_0002.png" in err
    with Image.open(out / f"{SEQ}.gif") as gif:
        assert gif.n_frames == 5
        gif.seek(1)
        present = np.asarray(gif.convert("RGB"))[-80:, 20:180].astype(int)
        gif.seek(2)
        missing = np.asarray(gif.convert("RGB"))[-80:, 20:180].astype(int)
    # Away from the events the missing frame is black; frame 1 is dark red.
    assert missing.max() <= 4 and np.abs(present - [20, 0, 0]).max() <= 4
