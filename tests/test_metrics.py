import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from critcore import metrics as m
from critcore.errors import DataError

LOCAL_SECTIONS = Path("/work/shared/data/reward-bench-local/sections.json")


def frame(rows):
    """rows: (subset, score_chosen, score_rejected, tie[, len_chosen, len_rejected])."""
    records = []
    for i, r in enumerate(rows):
        subset, sc, sr, tie = r[:4]
        lc, lr = r[4:6] if len(r) > 4 else (10, 10)
        records.append(dict(id=str(i), subset=subset, source="test", score_chosen=sc, score_rejected=sr,
                            tie=tie, len_chosen=lc, len_rejected=lr))
    return pd.DataFrame(records)


def outcomes_frame(spec):
    """spec: {subset: (n_correct, n_wrong)} -> frame with exactly those outcomes, no ties."""
    rows = []
    for subset, (good, bad) in spec.items():
        rows += [(subset, 1.0, 0.0, False)] * good + [(subset, 0.0, 1.0, False)] * bad
    return frame(rows)


# ---------------------------------------------------------------- correct


def test_correct_counts_ties_and_equal_scores_wrong():
    df = frame([
        ("a", 2.0, 1.0, False),  # right
        ("a", 2.0, 1.0, True),  # annotator tie: wrong even though chosen scores higher
        ("a", 1.0, 1.0, False),  # equal scores: wrong
        ("a", 1.0, 2.0, False),  # wrong way round
        ("a", float("nan"), 1.0, False),  # missing score: wrong
        ("a", 3.0, 1.0, None),  # no tie flag: not a tie
    ])
    assert m.correct(df).tolist() == [True, False, False, False, False, True]


def test_correct_requires_columns():
    with pytest.raises(ValueError, match="tie"):
        m.correct(pd.DataFrame({"score_chosen": [1.0], "score_rejected": [0.0]}))


# ---------------------------------------------------------------- bootstrap CI


def test_ci_contains_estimate_and_is_deterministic():
    outcomes = np.array([True] * 70 + [False] * 30)
    ci = m.accuracy_with_ci(outcomes, n_boot=2000, seed=3)
    assert ci["acc"] == pytest.approx(0.7) and ci["n"] == 100
    assert ci["lo"] < 0.7 < ci["hi"]
    # Normal approximation: half-width ~ 1.96 * sqrt(.7 * .3 / 100) = 0.09.
    assert 0.06 < (ci["hi"] - ci["lo"]) / 2 < 0.12
    assert m.accuracy_with_ci(outcomes, n_boot=2000, seed=3) == ci


def test_ci_depends_on_seed_only():
    # 997 pairs and 199 draws keep the quantiles off the 1/n grid, so seeds give distinct intervals.
    outcomes = [True] * 700 + [False] * 297
    ci = m.accuracy_with_ci(outcomes, n_boot=199, seed=3)
    assert m.accuracy_with_ci(outcomes, n_boot=199, seed=3) == ci
    assert m.accuracy_with_ci(outcomes, n_boot=199, seed=4) != ci


def test_ci_narrows_with_n():
    small = m.accuracy_with_ci([True] * 7 + [False] * 3, seed=0)
    large = m.accuracy_with_ci([True] * 700 + [False] * 300, seed=0)
    assert small["acc"] == large["acc"] == pytest.approx(0.7)
    assert (large["hi"] - large["lo"]) < (small["hi"] - small["lo"]) / 5


def test_ci_level_widens_interval():
    outcomes = [True] * 60 + [False] * 40
    narrow = m.accuracy_with_ci(outcomes, level=0.5, seed=0)
    wide = m.accuracy_with_ci(outcomes, level=0.99, seed=0)
    assert wide["lo"] < narrow["lo"] and narrow["hi"] < wide["hi"]
    with pytest.raises(ValueError):
        m.accuracy_with_ci(outcomes, level=95)


def test_ci_matches_literal_pair_resampling():
    # The binomial shortcut must give the same bootstrap distribution as resampling the pairs.
    outcomes = np.array([1] * 30 + [0] * 70)
    rng = np.random.default_rng(123)
    literal = outcomes[rng.integers(0, 100, size=(20000, 100))].mean(axis=1)
    lo, hi = np.quantile(literal, [0.025, 0.975])
    ci = m.accuracy_with_ci(outcomes, n_boot=20000, seed=0)
    assert ci["lo"] == pytest.approx(lo, abs=0.011) and ci["hi"] == pytest.approx(hi, abs=0.011)


def test_ci_edge_cases():
    empty = m.accuracy_with_ci([])
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in ("acc", "lo", "hi"))
    assert m.accuracy_with_ci([True] * 5) == {"acc": 1.0, "lo": 1.0, "hi": 1.0, "n": 5}
    assert m.accuracy_with_ci([False] * 5) == {"acc": 0.0, "lo": 0.0, "hi": 0.0, "n": 5}
    with pytest.raises(ValueError):
        m.accuracy_with_ci([0.5, 1.0])


def test_subset_accuracies_table():
    table = m.subset_accuracies(outcomes_frame({"b": (1, 3), "a": (3, 1)}), seed=0)
    assert table["subset"].tolist() == ["a", "b"]
    assert table["n"].tolist() == [4, 4]
    assert table["acc"].tolist() == [0.75, 0.25]
    assert (table["lo"] <= table["acc"]).all() and (table["acc"] <= table["hi"]).all()


# ---------------------------------------------------------------- sections


def test_section_scores_hand_computed():
    hep = ["hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"]
    sections = {
        "chat": ["a", "b"],
        "chat_hard": {"math-extra": 10, "x": 30},  # "math" outside reasoning: no up-weighting
        "reasoning": ["math-judgebench"] + hep,
        "safety": ["not-scored"],  # nothing present: section left out
    }
    counts = {"a": 100, "b": 300, "math-extra": 10, "x": 30, "math-judgebench": 90, **{h: 164 for h in hep}}
    acc = {"a": 0.9, "b": 0.5, "math-extra": 1.0, "x": 0.0, "math-judgebench": 0.8, **{h: 0.5 for h in hep},
           "unlisted": 0.0}
    got = m.section_scores(acc, counts, sections)

    chat = (100 * 0.9 + 300 * 0.5) / (100 + 300)  # = 240 / 400 = 0.6
    chat_hard = (10 * 1.0 + 30 * 0.0) / (10 + 30)  # = 0.25, plain counts
    # math weighs as much as the six hep subsets together: 6 * 164 = 984 instead of its 90 rows.
    reasoning = (984 * 0.8 + 6 * 164 * 0.5) / (984 + 6 * 164)  # = (787.2 + 492) / 1968 = 0.65
    assert chat == pytest.approx(0.6) and chat_hard == pytest.approx(0.25) and reasoning == pytest.approx(0.65)
    assert set(got) == {"chat", "chat_hard", "reasoning", "score"}
    assert got["chat"] == pytest.approx(0.6)
    assert got["chat_hard"] == pytest.approx(0.25)
    assert got["reasoning"] == pytest.approx(0.65)
    # Without the up-weighting it would be (90 * 0.8 + 984 * 0.5) / 1074 = 0.525.
    assert got["reasoning"] != pytest.approx((90 * 0.8 + 984 * 0.5) / 1074)
    assert got["score"] == pytest.approx((0.6 + 0.25 + 0.65) / 3)  # = 0.5


def test_section_scores_partial_section_and_missing_count():
    hep = {"hep-go": 164, "hep-rust": 164}
    got = m.section_scores({"math-prm": 1.0, "hep-go": 0.0, "hep-rust": 0.5},
                           {"math-prm": 447, **hep}, {"reasoning": ["math-prm", "hep-go", "hep-rust"]})
    # Only two code subsets present: math weighs 2 * 164 = 328.
    assert got["reasoning"] == pytest.approx((328 * 1.0 + 164 * 0.0 + 164 * 0.5) / (328 + 328))
    with pytest.raises(KeyError, match="hep-go"):
        m.section_scores({"hep-go": 1.0}, {}, {"reasoning": ["hep-go"]})
    assert m.section_scores({}, {}, {"chat": ["a"]}) == {}


def test_section_weights_reproduce_rewardbench_math_prm():
    reasoning = m.REWARDBENCH_SECTIONS["reasoning"]
    weights = m.section_weights(reasoning, "reasoning", list(reasoning))
    assert weights["math-prm"] == 984  # upstream's EXAMPLE_COUNTS value
    assert all(weights[s] == 164 for s in reasoning if s.startswith("hep-"))
    # Math only: nothing to match, plain counts.
    assert m.section_weights({"math-a": 5}, "reasoning", ["math-a"]) == {"math-a": 5.0}
    # Two math subsets share the code weight by their counts.
    w = m.section_weights({"math-a": 10, "math-b": 30, "hep-go": 100}, "Reasoning", ["math-a", "math-b", "hep-go"])
    assert w == {"math-a": 25.0, "math-b": 75.0, "hep-go": 100.0}


def test_rewardbench_sections_constant():
    assert list(m.REWARDBENCH_SECTIONS) == ["chat", "chat_hard", "safety", "reasoning"]
    assert len([s for sec in m.REWARDBENCH_SECTIONS.values() for s in sec]) == 23
    # The filtered split holds 2985 rows.
    assert sum(c for sec in m.REWARDBENCH_SECTIONS.values() for c in sec.values()) == 2985


def test_load_sections(tmp_path):
    path = tmp_path / "sections.json"
    path.write_text(json.dumps({"chat": {"a": 3}, "reasoning": {"math-x": 1, "hep-go": 2}}))
    assert m.load_sections(path) == {"chat": {"a": 3}, "reasoning": {"math-x": 1, "hep-go": 2}}
    for bad, needle in ((json.dumps({"chat": 3}), "'chat'"), ("[]", "input should be a valid dictionary"),
                        (json.dumps({"chat": {"a": 0}}), r"chat\.a must be at least 1"), ("{}", "at least 1 item"),
                        (json.dumps({"chat": [1]}), r"'chat\[0\]'"), ('{"chat": ', "invalid JSON")):
        path.write_text(bad)
        with pytest.raises(DataError, match=needle) as e:
            m.load_sections(path)
        assert str(path) in str(e.value)
    with pytest.raises(DataError, match="cannot be read"):
        m.load_sections(tmp_path / "missing.json")


@pytest.mark.skipif(not LOCAL_SECTIONS.exists(), reason="local reward-bench data not present")
def test_load_local_sections():
    sections = m.load_sections(LOCAL_SECTIONS)
    assert "reasoning" in sections and sections["reasoning"]["hep-cpp"] == 164
    weights = m.section_weights(sections["reasoning"], "reasoning", list(sections["reasoning"]))
    assert weights["math-judgebench"] == 6 * 164


def test_section_scores_with_ci():
    sections = {"chat": ["a", "b"], "reasoning": ["math-x", "hep-go", "hep-js"], "safety": ["absent"]}
    df = outcomes_frame({"a": (9, 1), "b": (10, 30), "math-x": (5, 5), "hep-go": (20, 0), "hep-js": (0, 20),
                         "other": (0, 7)})
    got = m.section_scores_with_ci(df, sections, n_boot=500, seed=1)
    chat = (9 + 10) / 50  # counts from the data: (10 * 0.9 + 40 * 0.25) / 50 = 0.38
    reasoning = (40 * 0.5 + 20 * 1.0 + 20 * 0.0) / 80  # math weight = 20 + 20 = 40 -> 0.5
    assert set(got) == {"chat", "reasoning", "score"}
    assert got["chat"]["acc"] == pytest.approx(chat) and got["chat"]["n"] == 50
    assert got["reasoning"]["acc"] == pytest.approx(reasoning) and got["reasoning"]["n"] == 50
    assert got["score"]["acc"] == pytest.approx((chat + reasoning) / 2) and got["score"]["n"] == 100
    for v in got.values():
        assert v["lo"] < v["acc"] < v["hi"]
    assert m.section_scores_with_ci(df, sections, n_boot=500, seed=1) == got


def test_section_ci_is_stratified_and_weighted():
    # Every subset is all-right or all-wrong, so every resample within a subset is identical:
    # the interval collapses. Pooled resampling would not collapse.
    df = outcomes_frame({"math-x": (3, 0), "hep-go": (0, 10)})
    got = m.section_scores_with_ci(df, {"reasoning": ["math-x", "hep-go"]}, n_boot=200, seed=0)
    assert got["reasoning"] == {"acc": 0.5, "lo": 0.5, "hi": 0.5, "n": 13}  # (10 * 1 + 10 * 0) / 20


def test_a_sample_of_the_suite_is_weighted_as_the_suite():
    # 10 pairs of each subset scored; the sections file says the suite holds 200 of "big" and
    # 100 of "small". RewardBench's Chat is the accuracy over the whole suite: 2/3 big, 1/3 small.
    df = outcomes_frame({"big": (10, 0), "small": (0, 10)})
    suite = {"chat": {"big": 200, "small": 100}}
    got = m.section_scores_with_ci(df, suite, n_boot=200, seed=0)
    assert got["chat"]["acc"] == pytest.approx(2 / 3) and got["chat"]["n"] == 20  # was 0.5: 10 and 10 scored
    assert m.section_scores_with_ci(df, {"chat": ["big", "small"]}, n_boot=200, seed=0)["chat"]["acc"] == 0.5
    full = outcomes_frame({"big": (200, 0), "small": (0, 100)})  # on the whole suite both agree
    assert m.section_scores_with_ci(full, suite, n_boot=50)["chat"]["acc"] == pytest.approx(
        m.section_scores_with_ci(full, {"chat": ["big", "small"]}, n_boot=50)["chat"]["acc"])
    assert m.summarize(df.assign(len_chosen=1, len_rejected=2), suite, n_boot=50)["sections"]["score"]["acc"] == \
        pytest.approx(2 / 3)


def test_section_counts_must_be_positive_integers(tmp_path):
    path = tmp_path / "sections.json"
    for bad in ({"chat": {"a": 0}}, {"chat": {"a": "100"}}, {"chat": {"a": 1.5}}, {"chat": {"a": True}}):
        path.write_text(json.dumps(bad))
        with pytest.raises(DataError, match=r"sections\.json: '?chat\.a'?.*(at least 1|integer)"):  # the file and the key
            m.load_sections(path)


# ---------------------------------------------------------------- McNemar


def test_mcnemar_hand_example():
    # 8 pairs only A gets right, 2 only B gets right, plus 5 both right and 3 both wrong.
    a = [True] * 8 + [False] * 2 + [True] * 5 + [False] * 3
    b = [False] * 8 + [True] * 2 + [True] * 5 + [False] * 3
    got = m.mcnemar_exact(a, b)
    assert (got["b"], got["c"]) == (8, 2)
    # Two-sided exact: 2 * P(X <= 2 | n=10, p=1/2) = 2 * (1 + 10 + 45) / 1024 = 0.109375.
    assert got["p_value"] == pytest.approx(0.109375)
    assert got["p_value"] == pytest.approx(stats.binomtest(2, 10).pvalue)
    assert m.mcnemar_exact(b, a) == {"b": 2, "c": 8, "p_value": got["p_value"]}


def test_mcnemar_no_discordant_pairs_and_length_mismatch():
    assert m.mcnemar_exact([True, False], [True, False]) == {"b": 0, "c": 0, "p_value": 1.0}
    with pytest.raises(ValueError):
        m.mcnemar_exact([True], [True, False])


# ---------------------------------------------------------------- length bias


def test_length_bias_known_spearman():
    df = frame([
        ("s", 1.0, 2.0, False, 10, 20),  # RM wrong, rejected longer
        ("s", 4.0, 3.0, False, 30, 40),  # RM right, rejected longer
        ("s", 5.0, 6.0, False, 60, 50),  # RM wrong, chosen longer
        ("s", 8.0, 7.0, False, 80, 15),  # RM right, chosen longer
    ])
    got = m.length_bias(df)
    # Pooled rewards [1,4,5,8,2,3,6,7] rank as [1,4,5,8,2,3,6,7]; lengths [10,30,60,80,20,40,50,15]
    # rank as [1,4,7,8,3,5,6,2]; rank differences 0,0,2,0,1,2,0,-5 square to 34, so
    # rho = 1 - 6 * 34 / (8 * (64 - 1)) = 1 - 204 / 504 = 0.595238.
    assert got["spearman_rho"] == pytest.approx(1 - 204 / 504)
    assert got["spearman_p"] == pytest.approx(stats.spearmanr([1, 4, 5, 8, 2, 3, 6, 7],
                                                              [10, 30, 60, 80, 20, 40, 50, 15]).pvalue)
    assert got["n_responses"] == 8
    assert got["longer_wins_acc"] == pytest.approx(0.5)  # pairs 3 and 4
    assert got["acc_rejected_longer"] == pytest.approx(0.5) and got["n_rejected_longer"] == 2


def test_length_bias_ties_count_wrong_for_longer_wins():
    df = frame([
        ("s", 2.0, 1.0, False, 50, 50),  # equal length: baseline wrong
        ("s", 2.0, 1.0, True, 90, 10),  # annotator tie: baseline wrong too
        ("s", 2.0, 1.0, False, 90, 10),  # baseline right
        ("s", 1.0, 2.0, False, 20, 10),  # baseline right
    ])
    got = m.length_bias(df)
    assert got["longer_wins_acc"] == pytest.approx(0.5)
    assert got["n_rejected_longer"] == 0 and math.isnan(got["acc_rejected_longer"])


def test_length_bias_constant_reward_gives_nan():
    got = m.length_bias(frame([("s", 1.0, 1.0, False, 10, 20), ("s", 1.0, 1.0, False, 30, 5)]))
    assert math.isnan(got["spearman_rho"]) and math.isnan(got["spearman_p"])


# ---------------------------------------------------------------- PandaLM tie policies


def test_pandalm_tie_policies():
    df = frame([
        ("p", 2.0, 1.0, False),
        ("p", 2.0, 1.0, False),
        ("p", 2.0, 1.0, False),
        ("p", 1.0, 2.0, False),
        ("p", 2.0, 1.0, True),  # tie scored "right" still counts wrong under "wrong"
        ("p", 1.0, 2.0, True),
    ])
    got = m.pandalm_accuracy(df, n_boot=300, seed=0)
    assert got["drop"]["acc"] == pytest.approx(3 / 4) and got["drop"]["n"] == 4
    assert got["wrong"]["acc"] == pytest.approx(3 / 6) and got["wrong"]["n"] == 6
    for policy in ("drop", "wrong"):
        assert got[policy]["lo"] <= got[policy]["acc"] <= got[policy]["hi"]


# ---------------------------------------------------------------- summary


def test_summarize_is_plain_json():
    df = outcomes_frame({"a": (3, 1), "hep-go": (2, 2), "math-x": (1, 0), "loose": (0, 2)})
    df.loc[0, "tie"] = True  # one of a's right answers becomes a tie: a drops to 2/4
    sections = {"chat": {"a": 4}, "reasoning": {"math-x": 1, "hep-go": 4}}
    out = m.summarize(df, sections=sections, n_boot=200, seed=0)
    text = json.dumps(out, allow_nan=False)  # strict JSON: NaN would raise
    assert json.loads(text) == out
    assert out["n"] == 11 and out["n_ties"] == 1
    assert out["overall"]["acc"] == pytest.approx(5 / 11)
    assert [r["subset"] for r in out["subsets"]] == ["a", "hep-go", "loose", "math-x"]
    assert out["subsets"][0]["acc"] == pytest.approx(0.5)
    assert set(out["sections"]) == {"chat", "reasoning", "score"}
    assert out["sections"]["reasoning"]["acc"] == pytest.approx((4 * 1.0 + 4 * 0.5) / 8)
    assert out["unsectioned"] == ["loose"]
    assert out["length_bias"]["spearman_rho"] is None  # lengths are all equal: NaN -> None

    bare = m.summarize(df, n_boot=50)
    assert bare["sections"] is None and bare["unsectioned"] == []
