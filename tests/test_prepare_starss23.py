import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import prepare_starss23  # noqa: E402
from test_datasets import SPLIT, make_clip  # noqa: E402


def make_video(path: Path, seconds: float, fps: int = 20, size=(192, 96)) -> None:
    """An mp4 whose picture brightness encodes the frame's time (red = 100 ms ticks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(int(seconds * fps)):
            img = np.zeros((size[1], size[0], 3), np.uint8)
            img[..., 0] = min(255, int(i / fps * 10) * 20)  # changes every 100 ms
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_extract_frames_10fps_zero_based(tmp_path):
    video = tmp_path / "video_dev" / SPLIT / "seqA.mp4"
    make_video(video, seconds=1.0)
    out = tmp_path / "frames_dev" / SPLIT / "seqA"
    n = prepare_starss23.extract_frames(video, out, "seqA")
    assert n == 10
    names = sorted(p.name for p in out.iterdir())
    assert names[0] == "seqA_0000.png" and names[-1] == "seqA_0009.png"
    reds = []
    for k in range(10):
        with Image.open(out / f"seqA_{k:04d}.png") as im:
            assert im.size == (360, 180)
            reds.append(np.asarray(im)[..., 0].mean())
    # Frame k shows the picture of the k-th 100 ms tick (red level 20 k, lossy codec).
    np.testing.assert_allclose(reds, 20 * np.arange(10), atol=6)


def test_tool_extracts_and_lists_problems(tmp_path, capsys):
    make_clip(tmp_path, "ok")
    make_clip(tmp_path, "vid", frames=10, labels=False)
    # Replace vid's frames by extraction from a video.
    for p in (tmp_path / "frames_dev" / SPLIT / "vid").iterdir():
        p.unlink()
    (tmp_path / "frames_dev" / SPLIT / "vid").rmdir()
    make_video(tmp_path / "video_dev" / SPLIT / "vid.mp4", seconds=1.0)
    rc = prepare_starss23.main(["--root", str(tmp_path)])
    err = capsys.readouterr()
    assert rc == 1  # vid has no labels
    assert "vid_std.json: file not found" in err.err
    assert len(list((tmp_path / "frames_dev" / SPLIT / "vid").glob("*.png"))) == 10
    assert f"{SPLIT}: 1/2 clips complete" in err.out
    assert prepare_starss23.main(["--root", str(tmp_path), "--no-labels-ok"]) == 0


def test_tool_bad_root(tmp_path):
    assert prepare_starss23.main(["--root", str(tmp_path / "nope")]) == 2
    with pytest.raises(SystemExit):
        prepare_starss23.main(["--help"])
