"""The learning-rate protocol and the statistics of an effect: the hierarchical bootstrap over seeds,
pairs and the rate choice (critcore.stats.arm_effects), the grid read from RM folders, the
selection rules and the robustness words (critcore.studies.protocol)."""
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from critcore import metrics
from critcore.errors import DataError
from critcore.stats import arm_effects
from critcore.studies import protocol

RNG = np.random.default_rng(0)


def _arms(p, shape):
    """0/1 correctness with per-arm accuracy p (arms, seeds, rates) of shape (..., n)."""
    return (RNG.random(shape) < np.asarray(p)[..., None]).astype(float)


def test_identical_arms_have_no_effect():
    test = np.repeat(_arms(np.full((1, 3, 2), 0.6), (1, 3, 2, 300)), 2, axis=0)
    e = arm_effects(test, np.ones(1), np.zeros(300, dtype=int), rule=1, n_boot=500)
    assert e["delta"][0] == 0 and e["lo"][0] == 0 and e["hi"][0] == 0 and e["p"][0] == 1


def test_a_better_arm_on_every_pair_excludes_zero():
    base = np.zeros((1, 3, 1, 200))
    test = np.concatenate([base, base + 1])
    e = arm_effects(test, np.ones(1), np.zeros(200, dtype=int), rule=0, n_boot=500)
    assert e["delta"][0] == pytest.approx(1) and e["lo"][0] == pytest.approx(1) and e["p"][0] == 0


def test_the_rules_pick_rates_on_validation():
    # arm 0 is best at rate 0 on validation, arm 1 at rate 2; their mean is best at rate 1
    val = np.zeros((2, 1, 3, 100))
    val[0, :, 0, :90], val[0, :, 1, :80], val[0, :, 2, :10] = 1, 1, 1
    val[1, :, 0, :10], val[1, :, 1, :80], val[1, :, 2, :90] = 1, 1, 1
    test = _arms(np.full((2, 1, 3), 0.5), (2, 1, 3, 100))
    w, strata = np.ones(1), np.zeros(100, dtype=int)
    assert arm_effects(test, w, strata, val, rule="per_arm", n_boot=50)["rates"].tolist() == [2]
    assert arm_effects(test, w, strata, val, rule="per_arm", n_boot=50)["baseline_rate"] == 0
    shared = arm_effects(test, w, strata, val, rule="shared", n_boot=50)
    assert shared["rates"].tolist() == [1] and shared["baseline_rate"] == 1
    with pytest.raises(ValueError, match="chooses on validation"):
        arm_effects(test, w, strata, None, rule="shared")


def test_the_interval_carries_the_variance_of_the_rate_choice():
    """The arm gains 10 points at rate 0 and loses 10 at rate 1; validation cannot tell the rates
    apart. At either fixed rate the interval is narrow and one-signed; with the rate chosen on
    validation it spans both outcomes (a pooled test at the chosen rate would not show that)."""
    n, m = 1000, 50
    base = _arms(np.full((1, 3, 2), 0.5), (1, 3, 2, n))
    arm = base.copy()
    for s in range(3):
        arm[0, s, 0, np.flatnonzero(base[0, s, 0] == 0)[:100]] = 1  # rate 0: 100 more right
        arm[0, s, 1, np.flatnonzero(base[0, s, 1] == 1)[:100]] = 0  # rate 1: 100 fewer
    test = np.concatenate([base, arm])
    val = _arms(np.full((2, 3, 2), 0.6), (2, 3, 2, m))
    w, strata = np.ones(1), np.zeros(n, dtype=int)
    at0 = arm_effects(test, w, strata, val, rule=0, n_boot=1000)
    at1 = arm_effects(test, w, strata, val, rule=1, n_boot=1000)
    chosen = arm_effects(test, w, strata, val, rule="shared", n_boot=1000)
    assert at0["lo"][0] > 0 and at1["hi"][0] < 0
    assert chosen["lo"][0] < 0 < chosen["hi"][0]


def test_seeds_are_resampled():
    """Two seeds with opposite effects: the pooled-pairs interval of either seed excludes 0, the
    hierarchical interval over seeds does not."""
    n = 2000
    base = np.zeros((1, 2, 1, n))
    arm = np.zeros((1, 2, 1, n))
    arm[0, 0, 0, :200] = 1  # seed 0: +10 points
    base[0, 1, 0, :200] = 1  # seed 1: -10 points
    e = arm_effects(np.concatenate([base, arm]), np.ones(1), np.zeros(n, dtype=int), rule=0, n_boot=1000)
    assert e["delta"][0] == 0 and e["lo"][0] < -0.05 and e["hi"][0] > 0.05


@pytest.mark.parametrize("cells, rates, head, word", [
    ([[2, 3], [1, 4]], [(2.5, 0.5, 4.5), (3.5, 1.5, 5.5)], (3.5, 1.5, 5.5), "robust"),
    ([[2, -3], [1, -4]], [(1.5, 0.2, 3.0), (-3.5, -5.0, -2.0)], (1.5, -4.0, 3.0), "depends on lr"),
    ([[2, 3], [-1, 4]], [(0.5, -2.0, 3.0), (3.5, 1.5, 5.5)], (3.5, 1.5, 5.5), "noise"),
    ([[1, -1], [1, -1]], [(1.0, -2.0, 4.0), (-1.0, -4.0, 2.0)], (1.0, -2.0, 4.0), "noise"),
    # a single seed or a single rate is never called robust
    ([[2, 3]], [(2.5, 0.5, 4.5), (3.5, 1.5, 5.5)], (3.5, 1.5, 5.5), "untested over seeds"),
    ([[2], [3]], [(2.5, 0.5, 4.5)], (2.5, 0.5, 4.5), "untested over lr"),
    ([[2]], [(2.5, 0.5, 4.5)], (2.5, 0.5, 4.5), "untested over seeds and lr"),
])
def test_robustness_words(cells, rates, head, word):
    got, why = _robustness(cells, rates, head)
    assert got == word and why


def _robustness(cells, rates, head):
    per_rate = [{"delta": d, "lo": lo, "hi": hi, "rate": r} for (d, lo, hi), r in zip(rates, [5e-5, 8e-5])]
    return protocol.robustness(np.array(cells), per_rate, dict(zip(("delta", "lo", "hi"), head)))


@pytest.mark.parametrize("cells, rates, head, why", [
    ([[2, 3], [-1, 4]], [(0.5, -2.0, 3.0), (3.5, 1.5, 5.5)], (3.5, 1.5, 5.5), "a seed disagrees in sign"),
    # one seed, the same sign at both rates, significant at one rate only, the selected one not
    ([[-2, -4]], [(-2.4, -5.5, 0.7), (-4.6, -7.7, -1.3)], (-2.4, -6.6, 0.5),
     "the selected comparison's interval includes 0; only lr 8e-05 excludes it"),
    # the selected comparison excludes 0, but a rate shows no change (no seed to disagree)
    ([[2, 0]], [(2.5, 0.5, 4.5), (0.0, -2.0, 2.0)], (2.5, 0.5, 4.5),
     "a rate or seed shows no change or the other sign than the selected comparison"),
])
def test_noise_says_why(cells, rates, head, why):
    assert _robustness(cells, rates, head) == ("noise", why)


SECTIONS = {"chat": {"easy": 100, "hard": 300}, "reasoning": {"hep-a": 50, "hep-b": 50, "math-x": 20}}


def _rm(tmp_path, critic, seed, lr, correct, val_correct):
    """An RM folder as train_rm leaves it: eval/<set>_scores.csv, summary.json and a result row."""
    d = tmp_path / f"{critic}__s{seed}__lr{lr:g}"
    (d / "eval").mkdir(parents=True)
    subsets = ["easy"] * 20 + ["hard"] * 20 + ["hep-a"] * 10 + ["hep-b"] * 10 + ["math-x"] * 10
    df = pd.DataFrame({"id": [f"p{i}" for i in range(len(subsets))], "subset": subsets, "tie": False,
                       "score_chosen": np.where(correct, 1.0, -1.0), "score_rejected": 0.0, "len_chosen": 5,
                       "len_rejected": 7})
    df.to_csv(d / "eval" / "rewardbench_scores.csv", index=False)
    v = pd.DataFrame({"id": [f"v{i}" for i in range(len(val_correct))], "subset": "mix", "tie": False,
                      "score_chosen": np.where(val_correct, 1.0, -1.0), "score_rejected": 0.0,
                      "len_chosen": 5, "len_rejected": 7})
    v.to_csv(d / "eval" / "validation_scores.csv", index=False)
    summary = {"rewardbench": metrics.summarize(df, SECTIONS, n_boot=10),
               "validation": metrics.summarize(v, None, n_boot=10)}
    (d / "eval" / "summary.json").write_text(json.dumps(summary, default=float))
    return {"row": {"backbone": "minilm", "critic": critic, "seed": seed, "lr": lr, "critic_id": critic},
            "summary": summary, "dir": str(d)}


def test_the_grid_reads_rm_folders_and_scores_as_evaluation_does(tmp_path):
    results = []
    for critic in ("none", "x"):
        for seed in (0, 1):
            for lr in (5e-5, 1e-4):
                results.append(_rm(tmp_path, critic, seed, lr, RNG.random(70) < 0.6, RNG.random(30) < 0.6))
    g = protocol.grid(results, "none", "Score", SECTIONS)
    assert g.arms == ["none", "x"] and g.seeds == [0, 1] and g.rates == [5e-5, 1e-4]
    assert g.test.shape == (2, 2, 2, 70) and g.val.shape == (2, 2, 2, 30)
    points = protocol.point_metrics(g)
    for r in results:  # the grid's Score of each RM is the one its summary reports (suite weights)
        a, s, lr = g.arms.index(r["row"]["critic"]), g.seeds.index(r["row"]["seed"]), g.rates.index(r["row"]["lr"])
        assert points[a, s, lr] == pytest.approx(100 * r["summary"]["rewardbench"]["sections"]["score"]["acc"])
    equal = protocol.grid(results, "none", "Score", SECTIONS, weighting="equal")
    assert not np.allclose(equal.weights, g.weights)  # 20 easy and 20 hard pairs: equal weights, not 100:300
    # an incomplete grid keeps what every arm has
    partial = [r for r in results if not (r["row"]["critic"] == "x" and r["row"]["lr"] == 1e-4)]
    assert protocol.grid(partial, "none", "Score", SECTIONS).rates == [5e-5]
    effects, verdicts = protocol.effects_table(results, "none", SECTIONS, "shared", {"backbone": "minilm"}, n_boot=200)
    assert set(effects["comparison"]) == {"lr 5e-05", "lr 0.0001", "best on validation, shared",
                                          "best on validation, per arm"}
    assert verdicts.loc[0, "Score robustness"] in protocol.WORDS
    assert len(verdicts.loc[0, "Score change by lr"].split(",")) == 2
    # a folder without its per-pair scores (copied without them) is one line naming the file, not a TypeError
    missing = Path(results[0]["dir"]) / "eval" / "rewardbench_scores.csv"
    missing.unlink()
    with pytest.raises(DataError, match=f"^{re.escape(str(missing))}: missing"):
        protocol.grid(results, "none", "Score", SECTIONS)
    assert protocol.sentence(verdicts.iloc[0].to_dict()).startswith("minilm x: Score ")


def test_selected_keeps_the_best_rate_on_validation(tmp_path):
    results = [_rm(tmp_path, c, 0, lr, np.ones(70, bool), np.arange(30) < k)
               for c, lr, k in (("none", 5e-5, 10), ("none", 1e-4, 20), ("x", 5e-5, 25), ("x", 1e-4, 5))]
    shared = protocol.selected(results, "shared")  # mean validation: 5e-5 (35/60) over 1e-4 (25/60)
    assert {(r["row"]["critic"], r["row"]["lr"]) for r in shared} == {("none", 5e-5), ("x", 5e-5)}
    per_arm = protocol.selected(results, "per_arm")
    assert {(r["row"]["critic"], r["row"]["lr"]) for r in per_arm} == {("none", 1e-4), ("x", 5e-5)}


def test_a_fixed_rate_needs_no_validation(tmp_path):
    """An ablation step at a fixed rate compares two RMs there and chooses nothing, so an arm trained
    without validation data (params/rq1_ablation.yaml's own arm) still gets its effect."""
    results = [_rm(tmp_path, critic, seed, 5e-5, RNG.random(70) < 0.6, RNG.random(30) < 0.6)
               for critic in ("none", "x") for seed in (0, 1)]
    for r in results[2:]:
        (Path(r["dir"]) / "eval" / "validation_scores.csv").unlink()
    e = protocol.protocol_effect(results, "none", "x", SECTIONS, rate=5e-5, rule="per_arm", n_boot=200)
    assert e["lo"] <= e["change"] <= e["hi"] and e["seeds"] == 2 and e["lr"] == 5e-5
    with pytest.raises(ValueError, match="chooses on validation"):  # choosing a rate still needs it
        protocol.protocol_effect(results, "none", "x", SECTIONS, rule="per_arm", n_boot=200)
