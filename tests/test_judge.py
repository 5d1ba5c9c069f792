"""Generative judges: score parsing, tie/unparseable accounting, cached judging over HTTP and on
the embedded SmolLM2, the RQ1 table rows, and the notebook through papermill.

The HTTP tests use tests/critic_servers.py's real loopback server. Where an exact outcome is
asserted, its engine is a *scripted* stand-in that returns canned judge outputs chosen per
response (say so below); the SmolLM2 tests run the real model, locally and behind the server."""
from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pandas as pd
import pytest

from critcore import judge as J
from critcore.llm import CritiqueCache
from critcore.critique import LocalCritic, OpenAICritic
from critcore.errors import UserError
from critcore.llm import fill, load_prompt
from critcore.studies.rq1_runs import rm_rows
from critcore.data import prompt_text
from critcore.metrics import summarize

from critic_servers import MIX_VALIDATION, SHARED_DATA, ChatServer, local_engine, short_real_pairs

needs_data = pytest.mark.skipif(not MIX_VALIDATION.exists(), reason=f"shared data not found at {SHARED_DATA}")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


# ---------------------------------------------------------------- parsing

SCORES = [  # (judge output, score read; None = unparseable)
    ("Score: 7", 7),
    ("7/10", 7),
    ("**7**", 7),
    ("Rating: 7.5", 7.5),
    ("8 - the response is clear and correct.", 8),
    ("I'd give it an 8 out of 10.", 8),
    ("I would rate this response 6 because it is vague.", 6),
    ("**Score:** 9", 9),
    ("**Score**: 9", 9),
    ("Overall score (0-10): [[8]]", 8),
    ("Rating: [[3]]", 3),
    ("The response deserves a score of 4.", 4),
    ("Score: 7.\nThe answer is helpful but long.", 7),
    ("The answer is accurate and concise.\n\nScore: 10", 10),
    ("Score (0-10): 10.\n\nUser: I'm really looking to make a career change", 10),  # SmolLM2, verbatim
    ("Score (0-10): 9.999999999999999999999", 9.999999999999999999999),  # SmolLM2, verbatim
    ("Score (0-10): 10 is excellent.\n\nYour response is excellent.", 10),  # SmolLM2, verbatim
    ("Score (0-10): 9.99\nScore (10-1", 9.99),  # SmolLM2, verbatim: "(10-1" is a range, not a score
    ("Score (0-10): 0\nRating (10-100): 10", 0),  # Gemma 3 270M, verbatim: the other scale is passed over
    ("Score (0-10): 0.0000000000000", 0),  # Gemma 3 270M, verbatim
    ("Score: 0", 0),
    ("0/10", 0),
    ("Score: eight", 8),
    ("I'd give it an eight out of ten", 8),
    (" 6", 6),
    ("[[5]]", 5),
    ("Rating is 6.5/10", 6.5),
    ("The rating would be 2", 2),
    ("Helpfulness: 8/10, Correctness: 6/10, Overall: 7/10", 7),  # the last one is the verdict
    ("Score: 3\n\nOn reflection, Score: 9", 9),
    ("Scores vary by rubric. Final score: 5", 5),
    # unparseable
    ("Score: 11", None),
    ("Score: -2", None),
    ("15/10", None),
    ("Score: 85", None),
    ("Score: 4/5", None),  # another scale
    ("4 out of 5 stars", None),
    ("Score: N/A", None),
    ("Score: <number>", None),
    ("Score: tenacious", None),
    ("100%", None),
    ("The response is good.", None),
    ("1. Helpfulness: a good response precisely and closely answers the user's request.\n2. Correctness: a", None),  # SmolLM2
    ("Your response is 100% accurate and correct.", None),  # SmolLM2, verbatim
    ("Score (0-10): Excellent\nScore (10-20): Very Excellent", None),  # SmolLM2, verbatim
    ("Score (0-10): 100%\nRate (0-10): 0%", None),  # Gemma 3 270M, verbatim
    ("Score (0-10): $10\nScore (10-100): $10", None),  # Gemma 3 270M, verbatim
    ("Score (1-5): 4", None),  # a label on another scale
    ("", None),
    (None, None),
]


@pytest.mark.parametrize("text,expected", SCORES)
def test_parse_score(text, expected):
    got = J.parse_score(text)
    assert got == expected, f"{text!r}: read {got}, expected {expected}"


def test_parse_score_range_is_configurable():
    assert J.parse_score("Score: 4", low=1, high=5) == 4
    assert J.parse_score("Score (1-5): 4", low=1, high=5) == 4 and J.parse_score("4/5", low=1, high=5) == 4
    assert J.parse_score("Score: 0", low=1, high=5) is None


# ---------------------------------------------------------------- prompts


def test_prompt_templates_ship_and_fill_once():
    direct = load_prompt(None, "judge_direct", ("prompt", "response"))
    with_critique = load_prompt("judge_with_critique.txt", "x", ("prompt", "response", "critique"))
    assert "{critique}" not in direct and "{critique}" in with_critique
    text = fill(with_critique, {"prompt": "Say {response}", "response": "{critique}!", "critique": "Fine."})
    assert "User: Say {response}" in text and "Chatbot: {critique}!" in text and "Critique: Fine." in text
    cut = fill("{prompt}|{response}", {"prompt": "a" * 10 + "END", "response": "START" + "b" * 10}, max_chars=5)
    assert cut == "…aaEND|START…"  # the prompt keeps its end, the response its start
    with pytest.raises(ValueError, match="critique"):
        J.Judge(OpenAICritic("http://127.0.0.1:9/v1", "m"), "critique", template="{prompt} {response}")
    with pytest.raises(UserError, match="judge_direct"):
        load_prompt("no_such_prompt", "x")


# ---------------------------------------------------------------- accounting


def _frame(rows):
    """A judge frame by hand: (subset, score_chosen, score_rejected); None = unparseable."""
    sc = np.array([np.nan if c is None else c for _, c, _ in rows], dtype=float)
    sr = np.array([np.nan if r is None else r for _, _, r in rows], dtype=float)
    df = pd.DataFrame({"id": [str(i) for i in range(len(rows))], "subset": [s for s, _, _ in rows], "source": "x",
                       "tie": False, "score_chosen": sc, "score_rejected": sr, "parsed_chosen": ~np.isnan(sc),
                       "parsed_rejected": ~np.isnan(sr), "judge_tie": sc == sr, "len_chosen": 1, "len_rejected": 1})
    from critcore.metrics import correct

    df["correct"] = correct(df)
    return df


def test_ties_and_unparseable_count_wrong_and_are_counted():
    df = _frame([("a", 8, 3), ("a", 7, 7), ("a", None, 2), ("a", None, None), ("b", 2, 9), ("b", 9, 1), ("b", 5, 5)])
    assert df["correct"].tolist() == [True, False, False, False, False, True, False]
    stats = J.judge_stats(df)
    assert stats == {"n": 7, "judge_ties": 2, "tie_rate": 2 / 7, "unparseable_outputs": 3,
                     "unparseable_pairs": 2, "unparseable_rate": 2 / 7}
    s = J.summarize_judge(df, {"sec1": ["a"], "sec2": ["b"]}, n_boot=200)
    assert s["overall"]["acc"] == pytest.approx(2 / 7)
    assert s["sections"]["sec1"]["acc"] == pytest.approx(1 / 4) and s["sections"]["sec2"]["acc"] == pytest.approx(1 / 3)
    assert s["judge_sections"]["sec1"]["judge_ties"] == 1 and s["judge_sections"]["sec1"]["unparseable_pairs"] == 2
    assert s["judge_sections"]["sec2"]["tie_rate"] == pytest.approx(1 / 3)


def test_table_row_and_rm_rows(tmp_path, capsys):
    sections = {"chat": ["alpacaeval-easy"], "reasoning": ["hep-go"]}
    df = _frame([("alpacaeval-easy", 9, 1), ("alpacaeval-easy", 4, 4), ("hep-go", None, 1), ("hep-go", 6, 2)])
    row = J.table_row("judge A", J.summarize_judge(df, sections, n_boot=200))
    assert row["Chat"] == 50.0 and row["Reasoning"] == 50.0 and row["Score"] == 50.0
    assert row["Ties %"] == 25.0 and row["Unparseable %"] == 25.0
    assert row["Chat ties %"] == 50.0 and row["Reasoning ties %"] == 0.0 and row["Safety ties %"] is None
    # An RQ1 run directory: rms/<name>/eval/summary.json written as evaluate() writes it.
    rm_df = df.assign(score_chosen=[1.0, 1.0, 1.0, 0.0], score_rejected=[0.0, 0.0, 0.0, 1.0])
    rm_summary = {"rewardbench": summarize(rm_df, sections=sections, n_boot=200)}
    (tmp_path / "rq1" / "rms" / "none" / "eval").mkdir(parents=True)
    (tmp_path / "rq1" / "rms" / "none" / "eval" / "summary.json").write_text(json.dumps(rm_summary))
    rows = rm_rows([tmp_path / "rq1", tmp_path / "missing"])
    assert "no RM summaries under" in capsys.readouterr().out  # the absent run is a note, not an error
    assert len(rows) == 1 and rows[0]["model"] == "RM rq1/none" and rows[0]["kind"] == "classifier RM"
    assert rows[0]["Chat"] == 100.0 and rows[0]["Reasoning"] == 50.0 and rows[0]["Ties %"] is None
    shown = J.format_table([row] + rows)
    assert shown.loc[0, "Chat"].startswith("50.0 [") and shown.loc[1, "Ties %"] == "—"


# ---------------------------------------------------------------- over HTTP, scripted


def scripted_engine(script: dict[str, str], critiques: dict[str, str] | None = None):
    """A SCRIPTED engine (canned outputs, no model): a critique request (the paper's critique
    template) gets critiques[response]; a judge request gets script[response], where the
    response is recognised by its opening text inside the rendered prompt."""

    def engine(text: str, max_tokens: int):
        table = critiques if "Please provide a critique" in text else script
        for start, reply in (table or {}).items():
            if start in text:
                return reply, 3
        return "no idea", 2

    return engine


@pytest.fixture(scope="module")
def four_pairs():
    if not MIX_VALIDATION.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    pairs = short_real_pairs(4)
    starts = [s for p in pairs for s in (p.chosen[:60], p.rejected[:60])]
    assert len(set(starts)) == 8 and not any(a in b for a in starts for b in starts if a != b)
    return pairs


def _script(pairs):
    """Pair 0 right (9 > 3), pair 1 a tie (7 = 7), pair 2 rejected side unparseable, pair 3 wrong."""
    outs = [("Score: 9", "Score: 3"), ("7/10", "I'd give it a 7 out of 10."),
            ("**8**", "The response is fine."), ("Rating: 2", "Score: 6 - mostly right")]
    return {s: o for p, (a, b) in zip(pairs, outs) for s, o in ((p.chosen[:60], a), (p.rejected[:60], b))}


@needs_data
def test_http_judge_scripted_scores_and_cache(tmp_path, four_pairs):
    with ChatServer(scripted_engine(_script(four_pairs))) as server:
        backend = OpenAICritic(server.url, "scripted-judge", max_concurrency=4)
        judge = J.Judge(backend, "direct", max_new_tokens=16)
        with CritiqueCache(tmp_path / "c.sqlite") as cache:
            df = J.judge_pairs(four_pairs, judge, cache, progress=False)
            assert cache.stats["generated"] == 8
        assert server.counts["requests"] == 8
        assert df["score_chosen"].tolist()[:2] == [9, 7] and df["score_rejected"].tolist()[:2] == [3, 7]
        assert df["correct"].tolist() == [True, False, False, False]
        assert df["judge_tie"].tolist() == [False, True, False, False]
        assert df["parsed_rejected"].tolist() == [True, True, False, True]
        assert J.judge_stats(df) == {"n": 4, "judge_ties": 1, "tie_rate": 0.25, "unparseable_outputs": 1,
                                     "unparseable_pairs": 1, "unparseable_rate": 0.25}
        # The judge prompt reached the server rendered, once per response.
        assert all("Rate the response on a scale of 0 to 10" in t for t in server.served)
        # Resumable and content-keyed: reordered pairs are all cache hits, nothing is requested.
        with CritiqueCache(tmp_path / "c.sqlite") as cache:
            again = J.judge_pairs(four_pairs[::-1], judge, cache, progress=False)
            assert cache.stats["hits"] == 8 and cache.stats["generated"] == 0
        assert server.counts["requests"] == 8
        assert again["correct"].tolist() == [False, False, False, True]
        # Another template is another key: all misses.
        other = J.Judge(backend, "direct", template="Rate 0-10.\n{prompt}\n---\n{response}", max_new_tokens=16)
        with CritiqueCache(tmp_path / "c.sqlite") as cache:
            J.judge_pairs(four_pairs[:1], other, cache, progress=False)
            assert cache.stats["misses"] == 2 and cache.stats["generated"] == 2
    rows = sqlite3.connect(tmp_path / "c.sqlite").execute("SELECT critic FROM critiques").fetchall()
    assert {r[0] for r in rows} == {"openai:scripted-judge#judge-direct"}


@needs_data
def test_http_judge_with_critiques_puts_the_critique_in_the_prompt(tmp_path, four_pairs):
    pairs = four_pairs[:2]
    crit = {p.chosen[:60]: f"CRIT-{i}-chosen: accurate." for i, p in enumerate(pairs)}
    crit.update({p.rejected[:60]: f"CRIT-{i}-rejected: wrong." for i, p in enumerate(pairs)})
    script = {f"CRIT-{i}-{side}": score for i in range(2) for side, score in (("chosen", "Score: 8"), ("rejected", "Score: 2"))}
    with ChatServer(scripted_engine(script, crit)) as server:
        judge = J.Judge(OpenAICritic(server.url, "scripted-judge"), "critique", max_new_tokens=16)
        assert judge.name == "scripted-judge Gen + Critiques"
        with CritiqueCache(tmp_path / "c.sqlite") as cache:
            df = J.judge_pairs(pairs, judge, cache, progress=False)
            assert cache.stats["generated"] == 8  # 4 critiques, then 4 scores
        assert df["critique_chosen"].tolist() == ["CRIT-0-chosen: accurate.", "CRIT-1-chosen: accurate."]
        assert df["correct"].all() and (df["score_chosen"] == 8).all()
        judged = [t for t in server.served if "Taking the critique into account" in t]
        assert len(judged) == 4 and all("Critique: CRIT-" in t for t in judged)
        with CritiqueCache(tmp_path / "c.sqlite") as cache:  # critiques and scores come from the cache
            J.judge_pairs(pairs, judge, cache, progress=False)
            assert cache.stats["generated"] == 0
        assert server.counts["requests"] == 8


# ---------------------------------------------------------------- the embedded SmolLM2


@pytest.fixture(scope="module")
def smollm2():
    if not MIX_VALIDATION.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return LocalCritic("smollm2", max_new_tokens=24, batch_size=4)


@needs_data
def test_smollm2_judge_both_modes_end_to_end(tmp_path, smollm2):
    pairs = short_real_pairs(2)
    for mode in ("direct", "critique"):
        judge = J.Judge(smollm2, mode, max_new_tokens=8, max_chars=500)
        with CritiqueCache(tmp_path / "c.sqlite") as cache:
            df = J.judge_pairs(pairs, judge, cache, progress=False)
            assert cache.stats["generated"] == (4 if mode == "direct" else 8)
        outs = df["output_chosen"].tolist() + df["output_rejected"].tolist()
        assert all(o.startswith("Score (0-10):") for o in outs)  # the prefilled answer is part of the output
        parsed = [J.parse_score(o) for o in outs]
        assert [math.isnan(s) for s in df["score_chosen"].tolist() + df["score_rejected"].tolist()] == [p is None for p in parsed]
        assert df["correct"].tolist() == [bool(c > r) for c, r in zip(df["score_chosen"], df["score_rejected"])]
        if mode == "critique":
            assert all(isinstance(c, str) and c for c in df["critique_chosen"])
        # A second judge over the same model is served from the cache without loading anything.
        fresh = J.Judge(LocalCritic("smollm2", max_new_tokens=24, batch_size=4), mode, max_new_tokens=8, max_chars=500)
        with CritiqueCache(tmp_path / "c.sqlite") as cache:
            again = J.judge_pairs(pairs, fresh, cache, progress=False)
            assert cache.stats["generated"] == 0
        assert fresh.model._model is None and again["output_chosen"].tolist() == df["output_chosen"].tolist()
    s = J.summarize_judge(df, None, n_boot=100)
    assert s["n"] == 2 and 0 <= s["judge"]["tie_rate"] <= 1


@needs_data
def test_smollm2_judge_over_http(tmp_path, smollm2):
    pairs = short_real_pairs(1)
    with ChatServer(local_engine(smollm2)) as server:
        judge = J.Judge(OpenAICritic(server.url, "smollm2", max_concurrency=1), "direct", max_new_tokens=8, max_chars=500)
        df = J.judge_pairs(pairs, judge, tmp_path / "c.sqlite", progress=False)
        assert server.counts["requests"] == 2
        # The server ran the real model on the rendered judge prompt; its replies are the outputs.
        served = list(server.served.items())
        assert sorted(o for _, o in served) == sorted([df["output_chosen"][0], df["output_rejected"][0]])
        assert all(prompt_text(pairs[0].prompt).strip()[-30:] in t and "Score: <number>" in t for t, _ in served)
        assert df["score_chosen"].isna()[0] == (J.parse_score(df["output_chosen"][0]) is None)


# ---------------------------------------------------------------- the notebook


@needs_data
def test_notebook_scripted_over_http(tmp_path, four_pairs):
    """The notebook through papermill with a SCRIPTED server (canned judge outputs), so the
    table it writes can be checked exactly; an RQ1 run directory and a missing one are given."""
    import papermill as pm

    sections = {"chat": ["s"]}
    rm_df = pd.DataFrame({"subset": "s", "score_chosen": [1.0, 0.0], "score_rejected": [0.0, 1.0], "tie": False,
                          "len_chosen": 1, "len_rejected": 1})
    (tmp_path / "rq1" / "rms" / "minilm-none" / "eval").mkdir(parents=True)
    (tmp_path / "rq1" / "rms" / "minilm-none" / "eval" / "summary.json").write_text(
        json.dumps({"rewardbench": summarize(rm_df, sections=sections, n_boot=100)}))
    data_file = tmp_path / "pairs.jsonl"
    data_file.write_text("".join(json.dumps({**p.to_dict(), "subset": "s"}) + "\n" for p in four_pairs))
    (tmp_path / "sections.json").write_text(json.dumps({"chat": {"s": 4}}))
    with ChatServer(scripted_engine(_script(four_pairs))) as server:
        pm.execute_notebook(
            "notebooks/generative_judge.ipynb", str(tmp_path / "out.ipynb"), progress_bar=False, kernel_name="python3",
            parameters={"out_dir": str(tmp_path / "out"), "data": {"format": "jsonl", "path": str(data_file)},
                        "sections": str(tmp_path / "sections.json"),
                        "models": {"api": {"backend": "openai", "base_url": server.url, "model": "scripted"}},
                        "judges": [{"model": "api", "mode": "direct", "name": "scripted Gen"}],
                        "critique_cache": str(tmp_path / "c.sqlite"), "n_boot": 200, "progress": False,
                        "rq1_runs": [str(tmp_path / "rq1"), str(tmp_path / "absent")]})
        assert server.counts["requests"] == 8
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    s = summary["judges"]["scripted Gen"]
    assert s["overall"]["acc"] == 0.25 and s["judge"]["judge_ties"] == 1 and s["judge"]["unparseable_pairs"] == 1
    table = pd.read_csv(out / "table.csv")
    assert table["model"].tolist() == ["scripted Gen", "RM rq1/minilm-none"]
    assert table.loc[0, "Chat"] == 25.0 and table.loc[0, "Ties %"] == 25.0 and table.loc[0, "Unparseable %"] == 25.0
    assert table.loc[1, "Chat"] == 50.0
    assert "scripted Gen" in (out / "table.txt").read_text()
    assert len(pd.read_csv(out / "judge_scripted-gen.csv")) == 4


def test_two_judges_with_one_name_are_refused_before_any_request(tmp_path, four_pairs):
    """Two judges of one model and mode get the same default name: one would silently replace the
    other in the table and its CSV, so the study refuses them before asking anything."""
    from critcore import studies
    from critcore.errors import ConfigError

    data_file = tmp_path / "pairs.jsonl"
    data_file.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in four_pairs))
    with ChatServer(scripted_engine(_script(four_pairs))) as server:
        with pytest.raises(ConfigError, match="'s Gen': the same name twice"):  # as the configuration is built
            studies.setup("judge", None, out_dir=str(tmp_path / "out"), data={"format": "jsonl", "path": str(data_file)},
                          sections=None, models={"api": {"backend": "openai", "base_url": server.url, "model": "s"}},
                          judges=[{"model": "api", "mode": "direct"}, {"model": "api", "mode": "direct", "max_new_tokens": 8}],
                          critique_cache=str(tmp_path / "c.sqlite"), progress=False)
        assert server.counts["requests"] == 0 and not (tmp_path / "out").exists()
