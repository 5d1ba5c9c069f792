"""Metacritique: AIU and verdict parsing, the P/R/F1 arithmetic (zero AIUs, unparseable
verdicts), reference files, the pipeline over HTTP and on the embedded SmolLM2, RQ1 gains, and the
notebook through papermill.

HTTP tests use tests/critic_servers.py's real loopback server; where exact scores are asserted
its engine is a *scripted* evaluator (canned AIU lists and verdicts chosen by content, no model),
said so at each use. The SmolLM2 test runs the real model."""
from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest

from critcore import metacritique as M
from critcore.llm import CritiqueCache
from critcore.critique import LocalCritic, OpenAICritic
from critcore.data import prompt_text
from critcore.metrics import summarize as rm_summarize
from critcore.stats import mean_with_ci
from critcore.studies.rq1_runs import rm_gains

from critic_servers import MIX_VALIDATION, SHARED_DATA, ChatServer, short_real_pairs

needs_data = pytest.mark.skipif(not MIX_VALIDATION.exists(), reason=f"shared data not found at {SHARED_DATA}")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


# ---------------------------------------------------------------- parsing

AIUS = [
    ("1. The response is wrong.\n2. Flour is not sweet.\n3) Powdered sugar should be used.",
     ["The response is wrong.", "Flour is not sweet.", "Powdered sugar should be used."]),
    ("Here are the atomic information units:\n- The answer is concise.\n* It misses the date.\n• It is polite.",
     ["The answer is concise.", "It misses the date.", "It is polite."]),
    ("Claims:\n1.The response is helpful.\n2. **The response** cites no source.",  # prefilled "Claims:\n1." + reply
     ["The response is helpful.", "The response cites no source."]),
    ("Claims:\nThe answer is concise.\nIt misses the date.", ["The answer is concise.", "It misses the date."]),
    ("The answer is concise. It misses the date! Is the tone right?",
     ["The answer is concise.", "It misses the date!", "Is the tone right?"]),
    ("Claim 1: The code compiles.\nClaim 2: The loop is off by one.", ["The code compiles.", "The loop is off by one."]),
    ("1. The response is wrong.\n2. The response is wrong\n3. 42\n4. ", ["The response is wrong."]),  # repeats, no letters
    ("1. The user's request is a palindrome.\n2. The user's request is a palindrome.\n3. The",  # SmolLM2, cut off
     ["The user's request is a palindrome."]),
    ("1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1", []),  # Gemma 3 270M's critique, verbatim
    ("None", []), ("None.", []), ("", []), (None, []), ("No claims.", []),
]


@pytest.mark.parametrize("text,expected", AIUS)
def test_parse_aius(text, expected):
    assert M.parse_aius(text) == expected


def test_parse_aius_cap():
    assert M.parse_aius("1. a a\n2. b b\n3. c c", max_aius=2) == ["a a", "b b"]
    assert M.parse_aius("1. Yes\n2. The code compiles.") == ["The code compiles."]  # one word is no claim


VERDICTS = [
    ("Verdict: true", True), ("Verdict: false.", False), ("Verdict: **false**", False),
    ("The claim is false.", False), ("The critique mentions it. Therefore, the claim is true.", True),
    ("True.", True), ("Yes", True), ("No, the critique does not mention it.", False),
    ("The claim is not covered by the critique.", False), ("Answer: not covered", False),
    ("The claim is correct, but on reflection... Verdict: false", False),  # a label beats prose
    ("incorrect", False),
    ("I cannot tell.", None), ("The response is about Rust.", None), ("", None), (None, None),
]


@pytest.mark.parametrize("text,expected", VERDICTS)
def test_parse_verdict(text, expected):
    assert M.parse_verdict(text) is expected


# ---------------------------------------------------------------- arithmetic


def test_example_scores_hand_computed():
    s = M.example_scores([True, False, None], [True, False])
    assert (s["precision"], s["recall"]) == (pytest.approx(1 / 3), 0.5)
    assert s["f1"] == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))  # = 0.4
    assert s["f1"] == pytest.approx(0.4) and s["unparseable"] == 1 and s["true_aius"] == 1


def test_zero_aius_and_all_unparseable():
    empty_critique = M.example_scores([], [True, True])  # the critique said nothing: P = 0
    assert (empty_critique["precision"], empty_critique["recall"], empty_critique["f1"]) == (0.0, 1.0, 0.0)
    empty_ref = M.example_scores([True, True], [])  # nothing to recall: R, F1 undefined
    assert empty_ref["precision"] == 1.0 and math.isnan(empty_ref["recall"]) and math.isnan(empty_ref["f1"])
    both_empty = M.example_scores([], [])
    assert both_empty["precision"] == 0.0 and math.isnan(both_empty["f1"])
    garbled = M.example_scores([None, None], [None, None, None])  # every verdict unreadable: false
    assert (garbled["precision"], garbled["recall"], garbled["f1"], garbled["unparseable"]) == (0.0, 0.0, 0.0, 5)


def test_summarize_means_exclusions_and_counts():
    rows = [M.example_scores([True, False, None], [True, False]),  # P 1/3, R 1/2, F1 0.4
            M.example_scores([], [True]),                            # P 0,   R 1,   F1 0
            M.example_scores([True], [])]                            # P 1,   R -,   F1 -
    s = M.summarize(pd.DataFrame(rows), n_boot=500)
    assert s["meta_p"]["mean"] == pytest.approx((1 / 3 + 0 + 1) / 3) and s["meta_p"]["n"] == 3
    assert s["meta_r"]["mean"] == pytest.approx(0.75) and s["meta_r"]["n"] == 2
    assert s["meta_f1"]["mean"] == pytest.approx(0.2) and s["meta_f1"]["n"] == 2
    assert s["meta_p"]["lo"] <= s["meta_p"]["mean"] <= s["meta_p"]["hi"]
    assert (s["items"], s["empty_critiques"], s["empty_references"], s["unparseable_verdicts"]) == (3, 1, 1, 1)
    assert (s["aius"], s["ref_aius"], s["verdicts"]) == (4, 3, 7)
    assert mean_with_ci([0.5, 0.5])["lo"] == 0.5 and mean_with_ci([math.nan])["n"] == 0
    row = M.table_row("c", s)
    assert row["Meta-F1"] == 20.0 and row["Meta-R n"] == 2 and row["empty_critiques"] == 1
    assert M.format_table([row]).loc[0, "unparseable verdicts"] == "1/7"


# ---------------------------------------------------------------- references


def test_reference_file_by_id_side_and_content(tmp_path):
    items = [M.Item("p1#chosen", "Q1", "A1"), M.Item("p1#rejected", "Q1", "B1"),
             M.Item("p2#chosen", "User: hi\n\nAssistant: yo\n\nUser: Q2", "A2 "), M.Item("p3#chosen", "Q3", "A3")]
    path = tmp_path / "refs.jsonl"
    lines = [{"id": "p1#chosen", "critique": "ref 1c"}, {"id": "p1", "side": "rejected", "critique": "ref 1r"},
             {"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                         {"role": "user", "content": "Q2"}], "response": "A2", "critique": "ref 2c"}]
    path.write_text("\n".join(json.dumps(d) for d in lines) + "\n\n")
    assert M.match_references(items, M.load_references(path)) == ["ref 1c", "ref 1r", "ref 2c", None]
    from critcore.errors import DataError

    bad = {'{"id": "x"}': r"refs.jsonl:1: field 'critique': missing or empty",
           '{"id": "x", "critique": "  "}': r"refs.jsonl:1: field 'critique': missing or empty",
           '{"critique": "c"}': r"refs.jsonl:1: field 'id': missing",
           '{"id": "x", "side": "left", "critique": "c"}': r"refs.jsonl:1: field 'side': expected chosen or rejected",
           '"just text"': r"refs.jsonl:1: expected a JSON object",
           '{"id": "p1", "side": "chosen", "critique": "a"}\n{"id": "p1#chosen", "critique": "b"}':
               r"refs.jsonl:2: field 'id': the same item as .*refs.jsonl:1"}
    for text, needle in bad.items():
        path.write_text(text + "\n")
        with pytest.raises(DataError, match=needle):
            M.load_references(path)


# ---------------------------------------------------------------- over HTTP, scripted


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def scripted_evaluator(aius: dict[str, str], verdicts: dict[str, str]):
    """A SCRIPTED evaluator engine (canned outputs by content, no model): an AIU request gets
    aius[tag] for the tag found in its critique; a verdict request gets verdicts[claim]."""

    def engine(text: str, max_tokens: int):
        if "atomic information units" in text:
            critique = _between(text, "Critique:\n", "\n\nList the claims")
            return next(v for k, v in aius.items() if k in critique), 5
        claim = _between(text, "Claim:\n", "\n\n")
        task = "recall" if "Is the claim covered" in text else "precision"
        return verdicts[f"{task}:{claim}"], 2

    return engine


AIU_SCRIPT = {"CRIT-A": "1. The response is correct.\n2. The response cites a source.\n3. The response is long.",
              "REF-A": "- The response is correct.\n- The response misses an example.",
              "CRIT-B": "None", "REF-B": "1. The response is wrong.",
              "CRIT-C": "Claims:\n1. The response is polite.", "REF-C": "None."}
VERDICT_SCRIPT = {"precision:The response is correct.": "Verdict: true",
                  "precision:The response cites a source.": "The claim is false.",
                  "precision:The response is long.": "Hmm, hard to say.",  # unparseable: false, counted
                  "precision:The response is polite.": "True.",
                  "recall:The response is correct.": "Verdict: true",
                  "recall:The response misses an example.": "Verdict: false",
                  "recall:The response is wrong.": "Yes, the critique implies it."}


@needs_data
def test_pipeline_over_http_scripted(tmp_path):
    pairs = short_real_pairs(3)
    items = M.items_from_pairs(pairs, sides=("chosen",))
    for it, tag in zip(items, "ABC"):
        it.critique, it.reference = f"CRIT-{tag}: some critique.", f"REF-{tag}: a reference critique."
    with ChatServer(scripted_evaluator(AIU_SCRIPT, VERDICT_SCRIPT)) as server:
        ev = M.MetaCritic(OpenAICritic(server.url, "scripted-evaluator", max_concurrency=4), verdict_max_new_tokens=32)
        with CritiqueCache(tmp_path / "c.sqlite") as cache:
            df = M.metacritique(items, ev, cache, progress=False)
            assert cache.stats["generated"] == 6 + 4 + 3  # AIU lists, precision and recall verdicts
        assert server.counts["requests"] == 13
        a, b, c = df.to_dict(orient="records")
        assert (a["precision"], a["recall"], a["f1"]) == (pytest.approx(1 / 3), 0.5, pytest.approx(0.4))
        assert json.loads(a["p_verdicts"]) == [True, False, None] and a["unparseable"] == 1
        assert (b["n_aius"], b["precision"], b["recall"], b["f1"]) == (0, 0.0, 1.0, 0.0)
        assert (c["precision"], c["n_ref_aius"]) == (1.0, 0) and math.isnan(c["recall"]) and math.isnan(c["f1"])
        s = M.summarize(df, n_boot=200)
        assert s["meta_p"]["mean"] == pytest.approx(4 / 9) and s["meta_r"]["mean"] == pytest.approx(0.75)
        assert s["meta_f1"]["mean"] == pytest.approx(0.2) and s["meta_f1"]["n"] == 2
        # The precision prompt carries question, response and reference; recall the critique under test.
        precision = [t for t in server.served if "Is the claim true?" in t]
        recall = [t for t in server.served if "Is the claim covered" in t]
        assert len(precision) == 4 and all("Reference critique:\nREF-" in t for t in precision)
        assert len(recall) == 3 and all("Critique:\nCRIT-" in t for t in recall)
        first = [t for t in precision if "REF-A" in t]
        assert len(first) == 3 and all(prompt_text(pairs[0].prompt).strip()[:30] in t and pairs[0].chosen[:30] in t for t in first)
        # Keyed by content, not position: reordered items are answered from the cache.
        with CritiqueCache(tmp_path / "c.sqlite") as cache:
            again = M.metacritique(items[::-1], ev, cache, progress=False)
            assert cache.stats["generated"] == 0 and cache.stats["hits"] == 13
        assert server.counts["requests"] == 13
        assert again["f1"].tolist()[::-1][:2] == df["f1"].tolist()[:2]


@needs_data
def test_all_verdicts_unparseable_over_http(tmp_path):
    items = M.items_from_pairs(short_real_pairs(1), sides=("chosen",))
    items[0].critique, items[0].reference = "CRIT-A: x.", "REF-A: y."
    garble = {k: "The sky is blue today." for k in VERDICT_SCRIPT}  # SCRIPTED: no verdict anywhere
    with ChatServer(scripted_evaluator(AIU_SCRIPT, garble)) as server:
        df = M.metacritique(items, M.MetaCritic(OpenAICritic(server.url, "scripted")), None, progress=False)
    row = df.iloc[0]
    assert (row["precision"], row["recall"], row["f1"], row["unparseable"]) == (0.0, 0.0, 0.0, 5)


def test_items_need_both_critiques():
    with pytest.raises(ValueError, match="needs both"):
        M.metacritique([M.Item("x", "q", "r", critique="c")], M.MetaCritic(OpenAICritic("http://127.0.0.1:9/v1", "m")))


# ---------------------------------------------------------------- the embedded SmolLM2


@needs_data
def test_smollm2_end_to_end(tmp_path):
    """Reference critiques by SmolLM2, critiques under test by a simulated critic, SmolLM2 as the
    evaluator: the whole pipeline on the real model, then again from the cache."""
    pairs = short_real_pairs(1)
    smollm2 = LocalCritic("smollm2", max_new_tokens=24, batch_size=4)
    ev = M.MetaCritic(smollm2, aiu_max_new_tokens=32, verdict_max_new_tokens=4, max_aius=2, max_chars=500)
    with CritiqueCache(tmp_path / "c.sqlite") as cache:
        refs = M.critique_items(pairs, smollm2, cache, sides=("chosen",), progress=False)
        items = M.critique_items(pairs, "simulated:1.0", cache, sides=("chosen",), progress=False)
        items[0].reference = refs[0].critique
        df = M.metacritique(items, ev, cache, progress=False)
        generated = cache.stats["generated"]
    row = df.iloc[0]
    aius, ref_aius = json.loads(row["aius"]), json.loads(row["ref_aius"])
    assert items[0].critique and refs[0].critique and len(aius) <= 2 and len(ref_aius) <= 2
    p_out, r_out = json.loads(row["p_outputs"]), json.loads(row["r_outputs"])
    assert len(p_out) == len(aius) and len(r_out) == len(ref_aius)
    assert all(o.startswith("Verdict:") for o in p_out + r_out)  # the prefilled answer
    assert json.loads(row["p_verdicts"]) == [M.parse_verdict(o) for o in p_out]
    # augment critiques both sides of the pair (2 by SmolLM2, 2 simulated), then 2 AIU lists and the verdicts
    assert generated == 4 + 2 + len(aius) + len(ref_aius)
    expect = M.example_scores(json.loads(row["p_verdicts"]), json.loads(row["r_verdicts"]))
    assert row["precision"] == expect["precision"] and 0 <= row["precision"] <= 1
    with CritiqueCache(tmp_path / "c.sqlite") as cache:
        again = M.metacritique(items, M.MetaCritic(LocalCritic("smollm2", max_new_tokens=24, batch_size=4),
                                                   aiu_max_new_tokens=32, verdict_max_new_tokens=4, max_aius=2,
                                                   max_chars=500), cache, progress=False)
        assert cache.stats["generated"] == 0
    assert again["aius"].tolist() == df["aius"].tolist()


# ---------------------------------------------------------------- RQ1 gains and the notebook


def _rm_run(root, scores: dict[str, tuple[list[float], str | None]], rows: dict[str, dict] | None = None):
    """An RQ1 run directory: rms/<name>/eval/summary.json for each RM (its chosen scores against
    rejected ones of 0.5; the critic identity in the summary when given), and, as
    critcore.studies writes it, rms/<name>/result.json with a "row" where `rows` has one."""
    sections = {"chat": ["s"]}
    for name, (chosen, critic) in scores.items():
        df = pd.DataFrame({"subset": "s", "score_chosen": chosen, "score_rejected": 0.5, "tie": False,
                           "len_chosen": 1, "len_rejected": 1})
        summary = {"rb": rm_summarize(df, sections=sections, n_boot=100)}
        if critic:
            summary["critic"] = critic
        (root / "rms" / name / "eval").mkdir(parents=True)
        (root / "rms" / name / "eval" / "summary.json").write_text(json.dumps(summary))
        if name in (rows or {}):
            (root / "rms" / name / "result.json").write_text(json.dumps({"row": rows[name], "summary": summary}))
    return root


def test_rm_gains(tmp_path, capsys):
    run = _rm_run(tmp_path / "rq1", {"none": ([1, 0, 1, 0], "none"), "sim9": ([1, 1, 1, 0], "simulated(p=0.9,seed=0)"),
                                     "mystery": ([0, 0, 0, 0], None)})
    gains = rm_gains([run, tmp_path / "absent"], {"p=0.9": ["simulated:0.9", "simulated(p=0.9,seed=0)"]},
                       rm_critics={"mystery": "other"})
    assert "no RM summaries" in capsys.readouterr().out
    g = gains.set_index("rm")
    assert g.loc["sim9", "gain"] == 25.0 and g.loc["sim9", "critic_label"] == "p=0.9"
    assert g.loc["mystery", "gain"] == -50.0 and g.loc["mystery", "rm_critic"] == "other" and pd.isna(g.loc["mystery", "critic_label"])
    assert rm_gains([tmp_path / "absent"]).empty


def test_rm_gains_per_backbone_in_a_studies_run(tmp_path):
    """critcore.studies folders rms/<backbone>__<critic>: each backbone has its own baseline."""
    rows = {"smollm2__smollm2": {"backbone": "smollm2", "critic": "smollm2", "critic_id": "local:smollm2"}}
    run = _rm_run(tmp_path / "rq1", {"minilm__none": ([1, 0, 0, 0], None), "minilm__smollm2": ([1, 1, 0, 0], None),
                                     "minilm__gemma3-270m": ([0, 0, 0, 0], None), "smollm2__none": ([1, 1, 1, 0], None),
                                     "smollm2__smollm2": ([1, 1, 1, 1], None)}, rows)
    gains = rm_gains(run, {"SmolLM2": ["local:smollm2"], "Gemma": ["gemma3-270m"]})
    g = gains.set_index("rm")
    assert sorted(g.index) == ["minilm__gemma3-270m", "minilm__smollm2", "smollm2__smollm2"]
    assert g.loc["minilm__smollm2", "gain"] == 25.0 and g.loc["minilm__smollm2", "critic_label"] == "SmolLM2"  # by name
    assert g.loc["minilm__gemma3-270m", "gain"] == -25.0 and g.loc["minilm__gemma3-270m", "critic_label"] == "Gemma"
    assert g.loc["smollm2__smollm2", "gain"] == 25.0 and g.loc["smollm2__smollm2", "critic_label"] == "SmolLM2"
    assert g.loc["smollm2__smollm2", "baseline_score"] == 75.0 and g.loc["smollm2__smollm2", "backbone"] == "smollm2"


BAD = re.compile(r"flaw|miss|unhelpful|drift|incorrect|not be trusted|wrong", re.I)


def polarity_evaluator(text: str, max_tokens: int):
    """A SCRIPTED evaluator (no model): one AIU per critique (its text); a claim is true / covered
    when it is as positive or negative as the reference / critique in the prompt."""
    if "atomic information units" in text:
        return "1. " + _between(text, "Critique:\n", "\n\nList the claims"), 5
    claim = _between(text, "Claim:\n", "\n\n")
    other = _between(text, "Reference critique:\n" if "Reference critique:" in text else "Critique:\n", "\n\nClaim:")
    return f"Verdict: {'true' if bool(BAD.search(claim)) == bool(BAD.search(other)) else 'false'}", 2


@needs_data
def test_notebook_scripted_over_http(tmp_path):
    """The notebook through papermill: simulated critics, references from a file, a SCRIPTED
    evaluator behind the loopback server, and an RQ1 run for the quality-vs-gain chart."""
    import papermill as pm

    pairs = short_real_pairs(3)
    data_file = tmp_path / "pairs.jsonl"
    data_file.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in pairs))
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"id": f"{p.id}#{side}", "critique": text}) + "\n" for p in pairs
                            for side, text in (("chosen", "The response is helpful and accurate."),
                                               ("rejected", "The response is unhelpful and misses the point."))))
    run = _rm_run(tmp_path / "rq1", {"none": ([1, 0, 1, 0], "none"), "good": ([1, 1, 1, 0], "simulated(p=1,seed=0)"),
                                     "bad": ([0, 0, 1, 0], None)})
    with ChatServer(polarity_evaluator) as server:
        pm.execute_notebook(
            "notebooks/metacritique.ipynb", str(tmp_path / "out.ipynb"), progress_bar=False, kernel_name="python3",
            parameters={"out_dir": str(tmp_path / "out"), "data": {"format": "jsonl", "path": str(data_file)},
                        "models": {"api": {"backend": "openai", "base_url": server.url, "model": "scripted"}},
                        "critics": {"always right": "simulated:1.0", "always wrong": "simulated:0.0"},
                        "reference": {"file": str(refs)}, "evaluator": "api", "critique_cache": str(tmp_path / "c.sqlite"),
                        "rq1_runs": [str(run)], "rm_critics": {"bad": "always wrong"}, "n_boot": 200, "progress": False})
        assert server.counts["requests"] > 0
    out = tmp_path / "out"
    table = pd.read_csv(out / "table.csv").set_index("critic")
    assert table.loc["always right", "Meta-F1"] == 100.0 and table.loc["always wrong", "Meta-F1"] == 0.0
    assert table.loc["always right", "items"] == 6 and table.loc["always right", "unparseable_verdicts"] == 0
    gains = pd.read_csv(out / "rm_gains.csv").set_index("rm")
    assert gains.loc["good", "critic_label"] == "always right" and gains.loc["good", "gain"] == 25.0
    assert gains.loc["bad", "critic_label"] == "always wrong" and gains.loc["bad", "gain"] == -25.0
    assert (out / "quality_vs_gain.html").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["missing_references"] == 0 and summary["critics"]["always wrong"]["meta_p"]["mean"] == 0.0
