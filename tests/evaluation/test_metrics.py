import math

import pytest

from faceclip.evaluation.metrics import ImageScore, aggregate, summarize


def _score(line, prompt, identity, id_sim, face, clip_t=None, clip_i=None):
    return ImageScore(
        line, f"{line}.png", f"{identity}.png", prompt, identity, line, id_sim, face, None, clip_t, clip_i
    )


def test_summarize_is_mean_and_population_std():
    summary = summarize([1.0, 2.0, None, 4.0])
    assert summary.n == 3
    assert summary.mean == pytest.approx(7 / 3)
    # by hand: deviations -4/3, -1/3, 5/3 -> squares 16/9, 1/9, 25/9 -> mean 42/27
    assert summary.std == pytest.approx(math.sqrt(42 / 27))
    assert summarize([None, None]) is None
    assert summarize([]) is None


def test_aggregate_counts_no_face_images_as_zero_and_groups_by_prompt_and_identity():
    scores = [
        _score(1, "p1", "alice", 0.8, True, clip_t=30.0),
        _score(2, "p1", "bob", 0.0, False, clip_t=20.0),
        _score(3, "p2", "alice", 0.6, True, clip_t=25.0, clip_i=0.9),
        _score(4, "p2", "bob", 0.4, True, clip_t=35.0, clip_i=0.7),
    ]
    result = aggregate(scores)
    overall = result["overall"]
    assert overall["n_images"] == 4
    assert overall["no_face_rate"] == 0.25
    assert overall["id_sim"]["mean"] == pytest.approx((0.8 + 0.0 + 0.6 + 0.4) / 4)
    assert overall["id_sim_detected"]["mean"] == pytest.approx((0.8 + 0.6 + 0.4) / 3)
    assert overall["id_sim_detected"]["n"] == 3
    assert overall["clip_t"]["mean"] == pytest.approx(27.5)
    assert overall["clip_t"]["std"] == pytest.approx(math.sqrt((2.5**2 + 7.5**2 + 2.5**2 + 7.5**2) / 4))
    assert overall["clip_i"] == {"mean": pytest.approx(0.8), "std": pytest.approx(0.1), "n": 2}
    assert list(result["per_prompt"]) == ["p1", "p2"]
    assert result["per_prompt"]["p1"]["no_face_rate"] == 0.5
    assert result["per_prompt"]["p1"]["id_sim"]["mean"] == pytest.approx(0.4)
    assert result["per_prompt"]["p1"]["clip_i"] is None
    assert result["per_identity"]["bob"]["id_sim"]["mean"] == pytest.approx(0.2)
    assert result["per_identity"]["bob"]["id_sim_detected"]["mean"] == pytest.approx(0.4)
    assert result["per_identity"]["alice"]["no_face_rate"] == 0.0


def test_aggregate_of_nothing():
    assert aggregate([])["overall"] == {
        "n_images": 0,
        "no_face_rate": None,
        "id_sim": None,
        "id_sim_detected": None,
        "clip_t": None,
        "clip_i": None,
    }
