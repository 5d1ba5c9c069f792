"""Bradley-Terry loss and margins: hand-computed values, stability at extreme differences, presets."""
import math

import pytest
import torch

from critcore.data import RATINGS, Pair
from critcore.loss import bradley_terry_loss, pair_margin
from critcore.recipe import MARGIN_PRESETS, margin_table


def _neg_log_sigmoid(x: float) -> float:
    return -math.log(1.0 / (1.0 + math.exp(-x)))


def test_loss_equals_neg_log_sigmoid_of_difference_minus_margin():
    r_c = torch.tensor([2.0, 0.5, -1.0, 3.0])
    r_r = torch.tensor([1.0, 1.5, -1.0, -2.0])
    m = torch.tensor([0.5, 0.0, 1.0, 2.0])
    expected = sum(_neg_log_sigmoid(c - r - mm) for c, r, mm in zip(r_c.tolist(), r_r.tolist(), m.tolist())) / 4
    assert bradley_terry_loss(r_c, r_r, m).item() == pytest.approx(expected, rel=1e-6)
    # Without a margin it is -log σ(r+ - r-); a zero margin changes nothing.
    expected0 = sum(_neg_log_sigmoid(c - r) for c, r in zip(r_c.tolist(), r_r.tolist())) / 4
    assert bradley_terry_loss(r_c, r_r).item() == pytest.approx(expected0, rel=1e-6)
    assert bradley_terry_loss(r_c, r_r, torch.zeros(4)).item() == pytest.approx(expected0, rel=1e-6)
    # A single pair at d = 0: log 2. A margin raises the loss of a pair that is right by less than it.
    assert bradley_terry_loss(torch.tensor([1.0]), torch.tensor([1.0])).item() == pytest.approx(math.log(2), rel=1e-6)
    assert bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([1.0])).item() == pytest.approx(math.log(2), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loss_is_stable_at_extreme_differences(dtype):
    r_c = torch.tensor([1000.0, -1000.0], dtype=dtype, requires_grad=True)
    r_r = torch.zeros(2, dtype=dtype)
    per_pair = [bradley_terry_loss(r_c[i:i + 1], r_r[i:i + 1]) for i in range(2)]
    right, wrong = (p.float().item() for p in per_pair)
    assert math.isfinite(right) and math.isfinite(wrong)
    assert right == pytest.approx(0.0, abs=1e-6)  # -log σ(1000) -> 0
    assert wrong == pytest.approx(1000.0, rel=1e-2)  # -log σ(-1000) -> 1000
    loss = bradley_terry_loss(r_c, r_r)
    loss.backward()
    grad = r_c.grad.float()
    assert torch.isfinite(loss.float()) and torch.isfinite(grad).all()
    # d/dd of the mean loss: -(1 - σ(d)) / 2 -> 0 for the right pair, -1/2 for the wrong one.
    assert grad[0].item() == pytest.approx(0.0, abs=1e-6)
    assert grad[1].item() == pytest.approx(-0.5, rel=1e-2)
    # The margin is inside the sigmoid: a huge margin makes a right pair wrong, still finite.
    big = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([1001.0])).item()
    assert big == pytest.approx(1000.0, rel=1e-6)


def test_margin_presets():
    assert margin_table("none") == {}
    assert margin_table(None) == {}
    small, large = margin_table("llama2-small"), margin_table("llama2-large")
    assert small == pytest.approx({"slightly better": 1 / 3, "better": 2 / 3, "significantly better": 1.0})
    assert large == {"slightly better": 1.0, "better": 2.0, "significantly better": 3.0}
    assert set(small) == set(large) == set(RATINGS)
    assert set(MARGIN_PRESETS) == {"none", "llama2-small", "llama2-large"}


def _pair(rating=None, margin=None):
    return Pair(id="p", prompt="q", chosen="a", rejected="b", rating=rating, margin=margin)


def test_pair_margin_from_preset_raw_and_dict():
    large = margin_table("llama2-large")
    assert pair_margin(_pair("better"), large) == 2.0
    assert pair_margin(_pair("significantly better"), large) == 3.0
    assert pair_margin(_pair(None), large) == 0.0  # no rating: no margin
    assert pair_margin(_pair("better"), margin_table("none")) == 0.0

    raw = margin_table("raw")
    assert raw == "raw"
    assert pair_margin(_pair("better", margin=4.5), raw) == 4.5  # the raw margin, not the rating's
    assert pair_margin(_pair("better", margin=None), raw) == 0.0

    table = margin_table({"better": 1, "significantly better": 2.5})
    assert table == {"better": 1.0, "significantly better": 2.5}
    assert all(isinstance(v, float) for v in table.values())
    assert pair_margin(_pair("better"), table) == 1.0
    assert pair_margin(_pair("slightly better"), table) == 0.0  # not in the mapping


def test_unknown_preset_or_rating_raises():
    with pytest.raises(ValueError, match="unknown margin preset"):
        margin_table("llama3")
    with pytest.raises(ValueError, match="unknown ratings"):
        margin_table({"much better": 1.0})
    with pytest.raises(ValueError, match="unknown ratings"):
        margin_table({"better": 1.0, "Better": 2.0})  # keys are exact
