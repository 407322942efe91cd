import numpy as np
import torch

from seld_d2.inference.postprocess import BASELINE_SELECTION, Detection, select_detections, to_detections

BOX = [100.0, 50.0, 140.0, 80.0]
SHIFTED = [102.0, 51.0, 142.0, 81.0]  # IoU with BOX ~0.86
# The SELD.INFER defaults (seld_d2/config.py; test_submission checks ClipExporter(cfg) passes them).
REPORT = {"score_thresh": 0.70, "class_thresh": {12: 0.85}, "nms_thresh": 0.5}


def test_knock_needs_085_other_classes_070():
    boxes = np.array([BOX, [0, 0, 10, 10], [200, 0, 230, 20], [300, 100, 320, 120]], np.float32)
    scores = np.array([0.80, 0.80, 0.90, 0.69])
    classes = np.array([12, 0, 12, 3])
    keep = select_detections(boxes, scores, classes, **REPORT)
    assert keep.tolist() == [2, 1]  # the 0.80 Knock and the 0.69 telephone go; best first
    assert select_detections(boxes, scores, classes, **{**REPORT, "class_thresh": None}).tolist() == [2, 0, 1]


def test_nms_is_class_wise():
    boxes = np.array([BOX, SHIFTED, SHIFTED], np.float32)
    scores = np.array([0.9, 0.8, 0.75])
    keep = select_detections(boxes, scores, np.array([4, 4, 8]), **REPORT)
    assert keep.tolist() == [0, 2]  # same class suppressed, the overlapping other class kept
    assert select_detections(boxes, scores, np.array([4, 5, 8]), **REPORT).tolist() == [0, 1, 2]


def test_order_ties_and_top_k_per_class():
    rng = np.random.default_rng(0)
    x = np.arange(12) * 30.0
    boxes = np.stack([x, x * 0 + 10, x + 20, x * 0 + 40], axis=1).astype(np.float32)  # disjoint
    scores = np.array([0.9, 0.95, 0.9, 0.8, 0.99, 0.9, 0.75, 0.85, 0.9, 0.9, 0.72, 0.71])
    classes = rng.permutation(np.repeat([0, 1, 2], 4))
    keep = select_detections(boxes, scores, classes, **REPORT)
    assert keep.tolist() == sorted(range(12), key=lambda i: (-scores[i], i))
    top2 = select_detections(boxes, scores, classes, **REPORT, max_per_class=2)
    assert len(top2) == 6 and np.bincount(classes[top2]).tolist() == [2, 2, 2]
    for c in range(3):  # the two best of each class
        best = sorted(np.flatnonzero(classes == c), key=lambda i: (-scores[i], i))[:2]
        assert set(top2[classes[top2] == c]) == set(best)


def test_baseline_settings_and_torch_inputs():
    boxes = torch.tensor([BOX, SHIFTED, [0, 0, 10, 10]])
    scores = torch.tensor([0.5, 0.4, 0.3])
    keep = select_detections(boxes, scores, torch.tensor([1, 1, 1]), **BASELINE_SELECTION)
    assert keep.tolist() == [0]  # NMS 0.3 and score 0.35
    none = torch.tensor([], dtype=torch.long)
    assert select_detections(boxes[:0], scores[:0], none, **REPORT).shape == (0,)


def test_to_detections():
    energy = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    dets = to_detections(
        7, torch.tensor([BOX, SHIFTED, BOX]), torch.tensor([0.9, 0.8, 0.7]), torch.tensor([1, 2, 3]),
        energy, torch.tensor([150.0, 200.0, 250.0]), keep=np.array([2, 0]),
    )  # fmt: skip
    assert [(d.frame, d.category_id, d.distance) for d in dets] == [(7, 3, 250.0), (7, 1, 150.0)]
    assert isinstance(dets[0], Detection) and dets[0].energy.shape == (28, 28)
    np.testing.assert_array_equal(dets[1].energy, energy[0, 0].numpy())


def test_batch_to_detections_equals_frame_by_frame():
    from detectron2.structures import Boxes, Instances

    from seld_d2.inference.predictor import batch_to_detections

    g = torch.Generator().manual_seed(0)
    batch = []
    for n in (3, 0, 2):
        inst = Instances((180, 360))
        inst.pred_boxes = Boxes(torch.rand(n, 4, generator=g) * 100)
        inst.scores = torch.tensor([0.5, 0.9, 0.5][:n])  # a tie: the stable order keeps index order
        inst.pred_classes = torch.randint(0, 13, (n,), generator=g)
        inst.pred_energy = torch.rand(n, 28, 28, generator=g)
        inst.pred_distance = torch.rand(n, generator=g) * 300
        batch.append(inst)
    got = batch_to_detections([7, 8, 9], batch)
    assert [len(d) for d in got] == [3, 0, 2]
    for frame, inst, dets in zip([7, 8, 9], batch, got, strict=True):
        s = inst.scores.numpy()
        want = to_detections(
            frame, inst.pred_boxes.tensor.numpy(), s, inst.pred_classes.numpy(), inst.pred_energy.numpy(),
            inst.pred_distance.numpy(), np.argsort(-s, kind="stable"),
        )  # fmt: skip
        assert len(dets) == len(want)
        for a, b in zip(dets, want, strict=True):
            fields = ("frame", "score", "category_id", "distance")
            assert [getattr(a, f) for f in fields] == [getattr(b, f) for f in fields]
            np.testing.assert_array_equal(a.box, b.box)
            np.testing.assert_array_equal(a.energy, b.energy)
    np.testing.assert_allclose([d.score for d in got[0]], [0.9, 0.5, 0.5])
    assert batch_to_detections([1, 2], [batch[1], batch[1]]) == [[], []]
