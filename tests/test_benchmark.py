"""tools/benchmark.py features / train / ddp / infer / uplam-train: one short run each, on the
CPU (numbers are not checked)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import benchmark  # noqa: E402


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_train_trains_the_stages_of_the_schedule(capsys):
    assert benchmark.main(["train", "--iters", "1", "--warmup", "0", "--threads", "2"]) == 0
    result = _last_json(capsys)
    assert result["benchmark"] == "train" and result["img_per_s"] > 0 and result["loader_frames_per_s"] > 0
    assert result["trainable_stages"] == ["layer1", "layer3", "layer4", "stems"]  # epoch 7: never layer2


def test_ddp_in_two_processes(capsys):
    assert benchmark.main(["ddp", "--processes", "2", "--iters", "1", "--warmup", "0"]) == 0
    result = _last_json(capsys)
    assert result["benchmark"] == "ddp" and result["processes"] == 2 and result["threads_per_process"] == 1
    assert result["img_per_s"] > 0 and result["find_unused_step_s"] > 0 and result["rebuild_s"] >= 0


def test_infer_model_and_end_to_end(capsys):
    argv = ["infer", "--iters", "1", "--warmup", "0", "--clip-frames", "3", "--detections-per-img", "5"]
    assert benchmark.main(argv + ["--threads", "2"]) == 0
    result = _last_json(capsys)
    assert result["benchmark"] == "infer" and result["img_per_s"] > 0 and result["e2e_frames_per_s"] > 0
    assert 0 < result["detections_per_img"] <= 5


def test_features_of_each_kind(capsys):
    assert (
        benchmark.main(["features", "--kind", "srp", "--method", "mvdr", "--frames", "40", "--repeats", "1"])
        == 0
    )
    result = _last_json(capsys)
    assert result["kind"] == "srp mvdr" and result["frames"] == 40 and result["srp_frames_per_s"] > 0
    assert benchmark.main(["features", "--frames", "8", "--batch-size", "8", "--repeats", "1"]) == 0
    assert _last_json(capsys)["uplam_frames_per_s"] > 0


def test_uplam_train(capsys):
    argv = ["uplam-train", "--bands", "linear9", "--batch-size", "2", "--iters", "2", "--warmup", "1"]
    assert benchmark.main(argv + ["--clips", "1", "--seconds", "0.5", "--upsample-loss-weight", "0.1"]) == 0
    result = _last_json(capsys)
    assert result["benchmark"] == "uplam-train" and result["frames_per_s"] > 0
    assert result["steps_per_epoch"] == 3
