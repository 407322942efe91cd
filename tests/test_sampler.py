import numpy as np

from seld_d2.data import sampler as S


def records(counts_per_class):
    recs = []
    for c, n in enumerate(counts_per_class):
        recs += [{"annotations": [{"category_id": c}]} for _ in range(n)]
    recs += [{"annotations": []} for _ in range(50)]  # frames without events
    return recs


def test_capped_inverse_frequency_weights():
    counts = np.array([1000, 500, 10, 0] + [100] * 9)
    w = S.class_weights(counts, cap=30)
    np.testing.assert_allclose(w[:3], [1.0, 2.0, 30.0])  # 1000/10 = 100 -> capped at 30
    assert w[3] == 30  # never seen -> cap
    np.testing.assert_allclose(w[4:], 10.0)


def test_drawn_class_frequencies_follow_the_weights():
    recs = records([2000, 400, 40, 10] + [200] * 9)
    sampler = S.ClassBalancedFrameSampler(recs, cap=30, seed=3)
    it = iter(sampler)
    draws = np.array([next(it) for _ in range(60000)])
    cats = np.array([r["annotations"][0]["category_id"] if r["annotations"] else -1 for r in recs])
    drawn = np.bincount(cats[draws][cats[draws] >= 0], minlength=13) / len(draws)
    # Expected share of class c: n_c * w_c / sum over frames of their weights.
    counts = np.bincount(cats[cats >= 0], minlength=13)
    w = S.class_weights(counts, 30)
    expected = counts * w / (np.sum(counts * w) + 50)
    np.testing.assert_allclose(drawn, expected, rtol=0.08, atol=0.002)
    # A frame of rare class 3 (weight 30, the cap) is drawn ~30x as often as one of class 0.
    per_frame = drawn / counts
    assert 25 < per_frame[3] / per_frame[0] < 35


def test_sampler_is_seeded_and_shards_across_ranks():
    recs = records([30] * 13)
    a = [x for _, x in zip(range(100), S.ClassBalancedFrameSampler(recs, seed=1), strict=False)]
    b = [x for _, x in zip(range(100), S.ClassBalancedFrameSampler(recs, seed=1), strict=False)]
    assert a == b
    r0 = [
        x
        for _, x in zip(
            range(50), S.ClassBalancedFrameSampler(recs, seed=1, rank=0, world_size=2), strict=False
        )
    ]
    r1 = [
        x
        for _, x in zip(
            range(50), S.ClassBalancedFrameSampler(recs, seed=1, rank=1, world_size=2), strict=False
        )
    ]
    assert [v for pair in zip(r0, r1, strict=True) for v in pair] == a
    seq = S.SequentialFrameSampler(40, seed=0)
    first = [x for _, x in zip(range(40), seq, strict=False)]
    assert sorted(first) == list(range(40))
