"""critcore.scaling (worth-N on curves with known answers), critcore.studies: the generated
preference set, parameter validation / dry runs of every params file, paired tests, secrets, and
a rerun that reuses critiques and trained models."""
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from critcore import generated, scaling, studies
from critcore.data import Pair, load
from critcore.metrics import mcnemar_exact, section_scores

ROOT = Path(__file__).resolve().parents[1]
PARAMS = sorted((ROOT / "params").glob("*.yaml"))


# ---------------------------------------------------------------- worth-N math on known curves

SIZES = [100, 200, 400, 800, 1600]


def loglinear(size, a=0.5, b=0.05):
    """acc = a + b * log2(size / 100): a curve whose inverse is known exactly."""
    return a + b * math.log2(size / 100)


def test_equivalent_size_inverts_a_loglinear_curve():
    accs = [loglinear(s) for s in SIZES]
    for true_size in (100, 150, 283, 400, 1000, 1600):
        eq = scaling.equivalent_size(SIZES, accs, loglinear(true_size))
        assert eq.status in (scaling.INTERPOLATED, scaling.AT_OR_BELOW_MIN)
        assert eq.size == pytest.approx(true_size, rel=1e-9)


def test_worth_n_exact_ratios():
    accs = [loglinear(s) for s in SIZES]
    # the Critique RM at 200 pairs is as good as No-Critiques at 800: worth 4
    assert scaling.worth_n(SIZES, accs, 200, loglinear(800)) == {"ratio": pytest.approx(4.0), "equivalent_size": pytest.approx(800),
                                                                  "status": "interpolated"}
    # between measured points: log-linear interpolation is exact on a log-linear curve
    assert scaling.worth_n(SIZES, accs, 200, loglinear(300))["ratio"] == pytest.approx(1.5, rel=1e-12)
    # no gain
    assert scaling.worth_n(SIZES, accs, 400, loglinear(400))["ratio"] == pytest.approx(1.0)


def test_not_reached_is_inf_and_below_range_is_an_upper_bound():
    accs = [loglinear(s) for s in SIZES]
    r = scaling.worth_n(SIZES, accs, 400, 0.9)  # above every No-Critiques point
    assert r["status"] == "not_reached" and math.isinf(r["ratio"]) and math.isinf(r["equivalent_size"])
    r = scaling.worth_n(SIZES, accs, 400, 0.3)  # below the smallest No-Critiques RM
    assert r["status"] == "at_or_below_min" and r["equivalent_size"] == 100 and r["ratio"] == 0.25
    r = scaling.worth_n(SIZES, [0.5, math.nan, 0.6, 0.7, 0.8], 400, 0.65)
    assert r["status"] == "undefined" and math.isnan(r["ratio"])


def test_first_crossing_of_a_non_monotone_curve_and_unsorted_input():
    sizes, accs = [400, 100, 200, 800], [0.55, 0.50, 0.70, 0.80]  # unsorted; dips at 400
    eq = scaling.equivalent_size(sizes, accs, 0.60)
    assert eq.status == "interpolated"
    assert eq.size == pytest.approx(100 * 2 ** 0.5)  # halfway from 100 to 200 in log size, not near 400..800
    with pytest.raises(ValueError, match="duplicate"):
        scaling.equivalent_size([100, 100], [0.5, 0.6], 0.55)
    with pytest.raises(ValueError, match="positive"):
        scaling.equivalent_size([0, 100], [0.5, 0.6], 0.55)


def test_percentile_interval_keeps_inf():
    from critcore.stats import percentile_interval

    lo, hi = percentile_interval([1.0] * 90 + [math.inf] * 10, 0.95)
    assert lo == 1.0 and math.isinf(hi)
    assert percentile_interval(np.arange(1, 101), 0.9) == (5.0, 95.0)


def _nested(n, ks, rng):
    """Per-pair outcomes for models whose correct sets are nested: model i gets the first ks[i] of a permutation right."""
    order = rng.permutation(n)
    out = []
    for k in ks:
        v = np.zeros(n, dtype=bool)
        v[order[:k]] = True
        out.append(v)
    return out


def test_worth_n_table_bootstrap_has_a_known_answer():
    rng = np.random.default_rng(0)
    n = 2000
    base_k = {100: 1000, 200: 1100, 400: 1200, 800: 1300}
    base_arr = dict(zip(base_k, _nested(n, list(base_k.values()), rng)))
    # the Critique RM at size s is exactly the No-Critiques RM at 2s (the same pairs right): worth 2 in every replicate
    crit = {100: base_arr[200], 200: base_arr[400], 400: base_arr[800]}
    rows = scaling.worth_n_table(base_arr, crit, n_boot=200, seed=1)
    assert [r["size"] for r in rows] == [100, 200, 400]
    for r in rows:
        assert r["ratio"] == pytest.approx(2.0) and r["status"] == "interpolated"
        assert r["lo"] == pytest.approx(2.0) and r["hi"] == pytest.approx(2.0)
        assert r["share_not_reached"] == 0.0
    assert rows[0]["acc"] == pytest.approx(1100 / n) and rows[0]["base_acc"] == pytest.approx(1000 / n)


def test_worth_n_table_ci_widens_with_noise_and_contains_the_point():
    rng = np.random.default_rng(3)
    n = 400
    base = {s: rng.random(n) < p for s, p in {64: 0.55, 128: 0.60, 256: 0.65, 512: 0.70}.items()}
    crit = {s: rng.random(n) < p for s, p in {64: 0.62, 128: 0.66, 256: 0.69, 512: 0.80}.items()}
    rows = scaling.worth_n_table(base, crit, n_boot=300, seed=0)
    finite = [r for r in rows if r["status"] == "interpolated"]
    assert finite, rows
    for r in finite:
        assert r["lo"] <= r["ratio"] <= r["hi"] and r["lo"] < r["hi"]
    assert rows[-1]["status"] == "not_reached" and math.isinf(rows[-1]["ratio"])


def test_bootstrap_metric_is_stratified_and_shared():
    strata = np.array(["a"] * 50 + ["b"] * 50)
    all_a = np.r_[np.ones(50, bool), np.zeros(50, bool)]  # right on every "a" pair, wrong on every "b"
    points, reps = scaling.bootstrap_metric({"m": all_a}, strata, n_boot=100, seed=0)
    assert points["m"] == 0.5 and np.all(reps["m"] == 0.5)  # within-stratum resampling keeps 50/50
    points, reps = scaling.bootstrap_metric({"m": all_a}, None, n_boot=100, seed=0)
    assert reps["m"].std() > 0  # unstratified resampling moves it
    sections = {"x": ["a"], "y": ["b", "c"]}  # names only: the subsets weigh as many as were scored
    strata3 = np.array(["a"] * 10 + ["b"] * 10 + ["c"] * 20)
    v = np.r_[np.ones(10, bool), np.zeros(10, bool), np.ones(20, bool)]
    pts, _ = scaling.bootstrap_metric({"m": v}, strata3, scaling.section_score(sections), n_boot=10)
    assert pts["m"] == pytest.approx(section_scores({"a": 1.0, "b": 0.0, "c": 1.0}, {"a": 10, "b": 10, "c": 20}, sections)["score"])
    assert pts["m"] == pytest.approx((1.0 + 20 / 30) / 2)
    suite = {"x": {"a": 5}, "y": {"b": 300, "c": 100}}  # with the suite's counts, b weighs 3 to c's 1
    pts, _ = scaling.bootstrap_metric({"m": v}, strata3, scaling.section_score(suite), n_boot=10)
    assert pts["m"] == pytest.approx((1.0 + 100 / 400) / 2)
    with pytest.raises(ValueError, match="share the pairs"):
        scaling.bootstrap_metric({"a": np.ones(3, bool), "b": np.ones(4, bool)})


# ---------------------------------------------------------------- the generated preference set

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
        "plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}


def _answer_from_prompt(prompt: str):
    """Ground truth recomputed from the question text alone (independent of the pair's meta)."""
    m = re.search(r"(\d+) (\+|-|\*|plus|minus|times) (\d+)", prompt)
    if m:
        return _OPS[m.group(2)](int(m.group(1)), int(m.group(3)))
    country = re.search(r"capital (?:city )?of (.+?)[?.]$", prompt).group(1)
    return dict(generated.CAPITALS)[country]


def test_generated_pairs_have_a_ground_truth():
    pairs = generated.generated_pairs(200, seed=0, split="train")
    assert len(pairs) == 200 and len({p.id for p in pairs}) == 200
    assert {p.subset for p in pairs} == set(generated.GENERATED_KINDS)
    for p in pairs:
        truth = _answer_from_prompt(p.prompt)
        if isinstance(truth, int):
            assert int(re.findall(r"\d+", p.chosen)[-1]) == truth
            assert int(re.findall(r"\d+", p.rejected)[-1]) != truth
        else:
            assert truth in p.chosen and truth not in p.rejected
        assert generated.generated_truth(p)
        swapped = Pair(**{**p.to_dict(), "chosen": p.rejected, "rejected": p.chosen})
        assert not generated.generated_truth(swapped)


def test_generated_pairs_are_deterministic_nested_and_split_by_question():
    a = [p.to_dict() for p in generated.generated_pairs(60, seed=3, split="train")]
    assert a == [p.to_dict() for p in generated.generated_pairs(60, seed=3, split="train")]
    assert a[:20] == [p.to_dict() for p in generated.generated_pairs(20, seed=3, split="train")]
    assert a != [p.to_dict() for p in generated.generated_pairs(60, seed=4, split="train")]
    test = generated.generated_pairs(60, seed=3, split="test")
    q = lambda p: p.meta.get("country") or (p.meta["kind"], p.meta["a"], p.meta["b"])  # noqa: E731
    assert not {q(p) for p in test} & {q(Pair(**d)) for d in a}
    with pytest.raises(ValueError, match="split"):
        generated.generated_pairs(5, split="dev")
    with pytest.raises(ValueError, match="kind"):
        generated.generated_pairs(5, kinds=["algebra"])
    only = generated.generated_pairs(10, kinds=["multiplication"])
    assert {p.subset for p in only} == {"multiplication"} and all("*" in p.chosen or "times" in p.chosen or
                                                                  "answer" in p.chosen for p in only)


def test_generated_data_spec_loads_through_data_load():
    pairs = load({"format": "generated", "n": 12, "split": "test", "seed": 1}).pairs
    assert len(pairs) == 12 and all(p.id.startswith("generated/test/1/") for p in pairs)
    from critcore.errors import DataError

    with pytest.raises(DataError, match="not an option"):
        load({"format": "generated", "size": 4})


# ---------------------------------------------------------------- params: dry runs and validation


@pytest.mark.parametrize("path", PARAMS, ids=[p.name for p in PARAMS])
def test_every_params_file_validates(path, tmp_path, capsys):
    from critcore import config

    cfg = config.load(path)
    if not cfg.notebook:  # a `critcore train` params file: its data specs load
        from critcore.studies.validation import describe_spec

        for spec in [cfg.train_data, cfg.validation_data, *(cfg.eval_data or {}).values()]:
            if spec:
                assert "pairs" in describe_spec(spec)
        return
    out = studies.run_study(path, dry_run=True, out_root=tmp_path)
    assert out == tmp_path / cfg.study / path.stem
    assert not out.exists()  # a dry run writes nothing
    assert ": OK" in capsys.readouterr().err


def test_paper_params_are_paper_shaped():
    for name in ("rq1_paper.yaml", "rq2_paper.yaml"):
        raw = yaml.safe_load((ROOT / "params" / name).read_text())
        assert raw["lr_sweep"] == [5e-5, 8e-5, 1.6e-4] and raw["train"]["bf16"] is True
        critics = [c for c in raw["critics"].values() if isinstance(c, dict)]
        assert critics and all(c["backend"] == "openai" and c["base_url"].startswith("http") for c in critics)
        assert not any("api_key" in c for c in critics)  # only api_key_env, never a key
    rq2 = yaml.safe_load((ROOT / "params" / "rq2_paper.yaml").read_text())
    assert rq2["sizes"][0] == 5000 and rq2["sizes"][-1] == 200000


def test_dose_response_params():
    from critcore.studies.base import simulated_p

    raw = yaml.safe_load((ROOT / "params" / "dose_response.yaml").read_text())
    assert raw["study"] == "rq1" and raw["backbones"] == ["minilm"]
    assert sorted(simulated_p(s) for s in raw["critics"].values() if simulated_p(s)) == [0.5, 0.7, 0.9, 1.0]
    assert "none" in raw["critics"].values() and raw["train_data"]["limit"] == 1000
    assert set(raw["eval_data"]) == {"rewardbench", "pandalm"}


def _problems(raw, **kw):
    from critcore import config

    try:
        cfg = config.resolve(config.schema_for(raw), raw)
    except config.ConfigError as e:
        return str(e)
    report = studies.validate(cfg, check_data=kw.pop("check_data", False))
    return " | ".join(report.errors)


def test_validation_catches_mistakes(tmp_path):
    base = {"study": "rq1", "train_data": {"format": "generated", "n": 8}, "eval_data": {"g": {"format": "generated", "n": 4, "split": "test"}},
            "critics": {"none": "none", "sim": "simulated:0.9"}, "sections": "generated"}
    assert _problems(base, check_data=True) == ""
    assert "unknown key 'epochs'" in _problems({**base, "epochs": 3})
    assert "'critics.bad': critic simulated: p must be in [0, 1]" in _problems({**base, "critics": {"none": "none", "bad": "simulated:1.5"}})
    assert "unknown key 'train.learning_rate'" in _problems({**base, "train": {"learning_rate": 1e-4}})
    assert "not a multiple" in _problems({**base, "train": {"batch_size": 30, "micro_batch_size": 8}})
    assert "no such file" in _problems({**base, "train_data": {"format": "jsonl", "path": str(tmp_path / "missing.jsonl")}})
    assert "unknown format" in _problems({**base, "train_data": {"format": "csv", "path": "x.csv"}})
    assert "local only" in _problems({**base, "eval_data": {"p": {"format": "pandalm", "path": "WeOpenML/PandaLM"}}})
    assert "backbone" in _problems({**base, "backbones": ["not a model name"]})
    assert "lr_sweep needs validation_data" in _problems({**base, "lr_sweep": [1e-4]})
    assert "exactly one No-Critiques" in _problems({**base, "study": "rq2", "critics": {"sim": "simulated:0.9"}, "sizes": [4, 8]})
    assert "exceeds" in _problems({**base, "study": "rq2", "sizes": [4, 80]}, check_data=True)
    assert "strictly increasing" in _problems({**base, "study": "rq2", "sizes": [8, 4]})
    assert "unknown study 'rq9'" in _problems({**base, "study": "rq9"})
    # repeats would train one RM twice and count it twice in the tables and the pooled tests
    assert "seeds: 0 given more than once" in _problems({**base, "seeds": [0, 1, 0]})
    assert "seeds: 3 given more than once" in _problems({**base, "backbones": [{"name": "m", "backbone": "minilm",
                                                                               "seeds": [3, 3]}]})
    assert "lr_sweep: 0.0001 given more than once" in _problems({**base, "lr_sweep": [1e-4, 1e-4]})
    assert "minilm given more than once" in _problems({**base, "backbones": ["minilm", "org/minilm"]})
    assert "none, base2 are all No-Critiques" in _problems({**base, "critics": {"none": "none", "base2": "none"}})
    assert "seeds: 2 given more than once" in _problems({**base, "study": "rq2", "sizes": [4, 8], "seeds": [2, 2]})
    # an empty list would run a study that trains or scores nothing, and report empty tables as done
    assert "critics: none given, so no RM would be trained" in _problems({**base, "critics": {}})
    assert "backbones: none given" in _problems({**base, "backbones": []})
    assert "backbone m: critics: none given" in _problems({**base, "backbones": [{"name": "m", "critics": []}]})
    assert "judges: none given" in _problems({"study": "judge", "judges": []})
    assert "critics: none given, so nothing would be scored" in _problems({"study": "metacritique", "critics": {}})
    assert "names a side twice" in _problems({"study": "metacritique", "sides": ["chosen", "chosen"]})
    assert "eval set name 'a.b'" in _problems({**base, "eval_data": {"a.b": base["eval_data"]["g"]}})
    assert "critic name 'a b'" in _problems({**base, "critics": {"none": "none", "a b": "simulated:0.9"}})
    from critcore.errors import ConfigError

    with pytest.raises(ConfigError, match="seeds: 0 given more than once"):  # a notebook's first cell
        studies.setup("rq1", {**base, "seeds": [0, 0], "out_dir": str(tmp_path / "never")})
    with pytest.raises(ConfigError, match="critic name 'a b'"):  # it names the RMs' folders
        studies.setup("rq1", {**base, "critics": {"none": "none", "a b": "simulated:0.9"}, "out_dir": str(tmp_path / "never")})
    assert not (tmp_path / "never").exists()
    # a hub name is asked of the hub; a dry run where no hub answers (as here) warns, it does not fail
    from critcore import config

    report = studies.validate(config.resolve(config.SCHEMAS["rq1"], {**base, "backbones": ["meta-llama/Llama-2-7b-hf"]}), False)
    assert report.ok and any("could not be checked on the hub" in w for w in report.warnings)
    # hub datasets pass on shape alone (no download): a GPU user's paper params
    hub_data = {**base, "train_data": {"format": "ultrafeedback", "path": "HuggingFaceH4/ultrafeedback_binarized",
                                       "split": "train_prefs"}}
    assert _problems(hub_data, check_data=True) == ""


def test_run_study_refuses_bad_params_before_running(tmp_path):
    from critcore.config import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"study": "quickstart", "n_train": 0, "data": "generated", "critic": "simulated:0.9"}))
    with pytest.raises(ConfigError, match="n_train"):
        studies.run_study(bad, out_root=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    generic = tmp_path / "other.yaml"
    generic.write_text(yaml.safe_dump({"study": "judge", "not_a_param": 1}))
    with pytest.raises(ConfigError, match="not_a_param"):
        studies.run_study(generic, dry_run=True, out_root=tmp_path / "out")


def test_cli_dry_run(tmp_path, monkeypatch, capsys):
    from critcore.cli import main

    monkeypatch.setenv("CRITCORE_OUTPUTS", str(tmp_path))
    assert main(["run", str(ROOT / "params" / "rq1_cpu.yaml"), "--dry-run", "--run-id", "x"]) == 0
    captured = capsys.readouterr()
    assert "eval_data pandalm" in captured.err and json.loads(captured.out)["out_dir"] == str(tmp_path / "rq1" / "x")
    assert not (tmp_path / "rq1").exists()


# ---------------------------------------------------------------- pieces of a run


def test_secrets_never_reach_run_json(tmp_path, monkeypatch):
    from critcore import config
    from critcore.provenance import git_info
    from critcore.run import Run

    monkeypatch.setenv("MY_CRITIC_KEY", "sk-very-secret-value")
    cfg = config.resolve(config.SCHEMAS["rq1"], {"description": "key sk-very-secret-value leaked", "critics": {
        "gpt": {"backend": "openai", "base_url": "http://x/v1", "model": "m", "api_key_env": "MY_CRITIC_KEY"}}})
    run = Run(config=cfg, run_id="r", out_dir=tmp_path)
    run.notes["api_key"] = "sk-other"
    run.finish()
    text = (tmp_path / "run.json").read_text()
    assert "sk-very-secret-value" not in text and "sk-other" not in text
    assert "MY_CRITIC_KEY" in text  # the variable's name is fine
    record = json.loads(text)
    for key in ("config", "git", "versions", "wall", "critique_cache", "status"):
        assert key in record
    assert record["versions"]["torch"] and record["versions"]["critcore"]
    if (ROOT / ".git").exists():
        info = git_info()
        assert re.fullmatch(r"[0-9a-f]{40}", info["commit"] or "") and info["dirty"] in (True, False)
        assert record["git"]["commit"] == info["commit"]


def test_paired_tests_match_mcnemar(tmp_path):
    ids = [f"p{i}" for i in range(12)]
    a_ok = [1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 1, 0]
    b_ok = [1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    tie = [False] * 11 + [True]
    for name, ok in (("a", a_ok), ("b", b_ok)):
        d = tmp_path / name / "eval"
        d.mkdir(parents=True)
        pd.DataFrame({"id": ids, "subset": ["s"] * 12, "tie": tie, "score_chosen": [1.0 if o else -1.0 for o in ok],
                      "score_rejected": [0.0] * 12}).to_csv(d / "pandalm_scores.csv", index=False)
    t = studies.paired_tests(tmp_path / "a", tmp_path / "b")["pandalm"]
    expect = mcnemar_exact(np.array(a_ok[:11], bool), np.array(b_ok[:11], bool))
    assert t == {**expect, "n": 11} and (t["b"], t["c"]) == (2, 4)


def test_result_row_keeps_other_sections():
    from critcore.report import results_row

    ci = {"acc": 0.75, "lo": 0.5, "hi": 1.0, "n": 4}
    summary = {"generated": {"overall": ci, "sections": {"arithmetic": ci, "facts": {**ci, "acc": 0.5}, "score": ci}}}
    row = results_row(summary)
    assert row["Score"] == 75.0 and row["Arithmetic"] == 75.0 and row["Facts"] == 50.0 and row["Chat"] is None


# ---------------------------------------------------------------- a rerun reuses critiques and RMs


def _tiny_quickstart(tmp_path, run_id, n_boot=1000):
    return studies.setup("quickstart", None, data="generated", n_train=8, n_eval=8, critic="simulated:0.9",
                         train={"max_length": 48, "batch_size": 8, "micro_batch_size": 8, "epochs": 1},
                         out_dir=str(tmp_path / "qs"), run_id=run_id, critique_cache=str(tmp_path / "c.sqlite"),
                         progress=False, threads=1, n_boot=n_boot)


def _eval_times(tmp_path):
    return {p.parent.parent.name: p.stat().st_mtime_ns for p in (tmp_path / "qs" / "rms").glob("*/eval/summary.json")}


def test_rerun_reuses_critiques_and_trained_models(tmp_path):
    tables, evaluated = [], []
    for attempt in range(2):
        run = _tiny_quickstart(tmp_path, "r")
        splits = studies.load_splits(run)
        critiqued = studies.critique_all(run, splits)
        results = studies.quickstart_train_all(run, critiqued)
        tables.append(studies.quickstart_table(run, results))
        stats = run.critique_stats["simulated-0.9"]
        run.finish()
        evaluated.append(_eval_times(tmp_path))
        record = json.loads((tmp_path / "qs" / "run.json").read_text())
        assert len(record["history"]) == attempt  # a rerun keeps the first attempt's timings
        if attempt == 0:
            assert stats["generated"] == 32 and not any(r["reused"] for r in results)
        else:
            assert stats["generated"] == 0 and stats["hits"] == 32
            assert all(r["reused"] for r in results)
    pd.testing.assert_frame_equal(tables[0], tables[1])
    assert sorted(p.name for p in (tmp_path / "qs" / "rms").iterdir()) == ["minilm__none", "minilm__simulated-0.9"]
    record = json.loads((tmp_path / "qs" / "run.json").read_text())
    assert all(r["reused"] for r in record["rms"]) and record["critique_cache"]["by_critic"]["simulated-0.9"]["generated"] == 0
    assert record["history"][0]["by_critic"]["simulated-0.9"]["generated"] == 32
    assert len(evaluated[0]) == 2 and evaluated[1] == evaluated[0]  # the same models on the same pairs: not scored again
    # another evaluation setting (bootstrap replicates) scores the reused models again
    run = _tiny_quickstart(tmp_path, "r", n_boot=200)
    critiqued = studies.critique_all(run, studies.load_splits(run))
    assert all(r["reused"] for r in studies.quickstart_train_all(run, critiqued))
    again = _eval_times(tmp_path)
    assert all(again[k] != evaluated[0][k] for k in again)


def test_rq1_score_chart_shows_seed_means_not_stacked_seeds():
    import pandas as pd

    from critcore.studies.rq1_charts import rq1_score_chart

    table = pd.DataFrame({"critic": ["none", "none"], "backbone": ["m", "m"], "Score": [40.0, 60.0],
                          "Score lo": [30.0, 50.0], "Score hi": [50.0, 70.0]})
    spec = rq1_score_chart(table).to_dict()
    rows = [r for ds in spec["datasets"].values() for r in ds]
    assert {"critic": "none", "backbone": "m", "acc": 50.0, "lo": 40.0, "hi": 60.0} in rows  # one bar: the mean
    assert "seed means" in spec["title"]["text"] if isinstance(spec["title"], dict) else "seed means" in spec["title"]


def test_backbones_resolve_their_sweep_and_seeds_against_the_study():
    from critcore import config
    from critcore.studies.base import backbones_of

    cfg = config.resolve(config.SCHEMAS["rq1"], {
        "study": "rq1", "lr_sweep": [5e-5, 8e-5], "seeds": [0, 1, 2], "validation_data": "v.jsonl",
        "backbones": ["minilm", {"name": "smol", "backbone": "smollm2", "lr_sweep": [], "seeds": [7]},
                      {"name": "mini2", "backbone": "minilm", "lr_sweep": [1e-4, 2e-4]}]})
    got = {b.name: (b.lr_sweep, b.seeds) for b in backbones_of(cfg)}
    assert got == {"minilm": ([5e-5, 8e-5], [0, 1, 2]), "smol": (None, [7]), "mini2": ([1e-4, 2e-4], [0, 1, 2])}
    plain = config.resolve(config.SCHEMAS["rq1"], {"study": "rq1"})
    assert [(b.lr_sweep, b.seeds) for b in backbones_of(plain)] == [(None, [None])]


def test_rq2_worth_chart_has_one_panel_per_metric_and_keeps_unbounded_rows(tmp_path):
    from critcore.report import save_chart
    from critcore.studies.rq2 import rq2_worth_chart

    inf = float("inf")
    worth = pd.DataFrame({"critic": ["c"] * 4, "metric": ["Score", "Score", "PandaLM", "PandaLM"], "size": [50, 100, 50, 100],
                          "ratio": [inf, 0.5, 1.0, 0.67], "lo": [1.0, 0.5, 1.0, 0.5], "hi": [inf, inf, 2.7, 2.1],
                          "status": ["not_reached", "at_or_below_min", "at_or_below_min", "interpolated"]})
    spec = rq2_worth_chart(worth).to_dict()
    assert spec["facet"]["column"]["field"] == "metric"  # Score and PandaLM side by side, not told apart by dashes
    rows = [r for ds in spec["datasets"].values() for r in ds]
    assert {r["metric"] for r in rows} == {"Score", "PandaLM"} and len(rows) == 4
    not_reached = next(r for r in rows if r["status"] == "not_reached")
    assert not_reached["shown"] == 2.0 and not_reached["hi_shown"] == 2.0  # drawn at its lower bound, max size / size
    save_chart(rq2_worth_chart(worth), tmp_path / "w.html", tmp_path / "w.png")  # vega-lite accepts it
    assert (tmp_path / "w.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.filterwarnings("ignore::critcore.train.TrainingWarning")  # a tiny RM is all this needs
def test_the_configured_seed_draws_every_interval(tmp_path):
    """`seed` is the data-sampling and bootstrap seed (critcore.params.Base.seed), but a study's RMs,
    `critcore train` and `critcore evaluate` drew their intervals with seed 0 whatever was set."""
    from critcore import config
    from critcore.jobs import evaluate_job

    train = {"format": "generated", "n": 8, "seed": 0, "split": "train"}
    test = {"format": "generated", "n": 40, "seed": 0, "split": "test"}
    studied, evaluated = [], []
    for seed in (0, 1):
        run = studies.setup("quickstart", None, train_data=train, eval_data={"test": test}, sections="generated",
                            critic="none", train={"max_length": 48, "batch_size": 8, "micro_batch_size": 8},
                            out_dir=str(tmp_path / f"qs{seed}"), critique_cache=str(tmp_path / "c.sqlite"),
                            progress=False, threads=1, n_boot=200, seed=seed)
        (result,) = studies.quickstart_train_all(run, studies.critique_all(run, studies.load_splits(run)))
        run.finish()
        studied.append(result["summary"]["test"])
        model = tmp_path / "qs0" / "rms" / "minilm__none" / "train" / "model"
        cfg = config.load(None, [f"seed={seed}", "n_boot=200"], {"model": str(model), "eval_data.test": json.dumps(test),
                          "out_dir": str(tmp_path / f"ev{seed}"), "critique_cache": str(tmp_path / "c.sqlite"),
                          "progress": False}, schema="evaluate")
        evaluated.append(evaluate_job(cfg)["test"])
    for a, b in (studied, evaluated):
        assert a["overall"]["acc"] == b["overall"]["acc"] and a["n"] == b["n"] == 40  # the same pairs and scores
        assert (a["overall"]["lo"], a["overall"]["hi"], a["sections"]) != (b["overall"]["lo"], b["overall"]["hi"],
                                                                            b["sections"])  # other draws


def test_held_out_pairs_seen_in_training_are_warned_of_and_recorded(tmp_path):
    """Evaluation pairs whose prompt is a training prompt inflate the score: the run warns and
    run.json says how many, per split; disjoint splits (the generated train and test) say nothing."""
    import warnings

    from critcore.splits import OverlapWarning

    train = {"format": "generated", "n": 12, "seed": 0, "split": "train"}
    leaky = {"format": "generated", "n": 24, "seed": 0, "split": "train"}  # holds the 12 training pairs
    with pytest.warns(OverlapWarning, match="share their prompt with training pairs"):
        run = studies.setup("quickstart", None, train_data=train, eval_data={"leaky": leaky}, out_dir=str(tmp_path / "a"),
                            critique_cache=str(tmp_path / "c.sqlite"), progress=False)
        studies.load_splits(run)
    seen = run.notes["overlap"]["leaky"]
    assert seen["of"] == 24 and seen["same_pair"] == 12 and 12 <= seen["same_prompt"] <= 24
    run.finish()
    assert json.loads((tmp_path / "a" / "run.json").read_text())["overlap"] == run.notes["overlap"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", OverlapWarning)
        clean = studies.setup("quickstart", None, data="generated", n_train=12, n_eval=12, out_dir=str(tmp_path / "b"),
                              critique_cache=str(tmp_path / "c.sqlite"), progress=False)
        studies.load_splits(clean)
    assert "overlap" not in clean.notes and "validation_overlap" not in clean.notes
    # validation pairs that are also evaluation pairs: a sweep would pick its learning rate on the test
    with pytest.warns(OverlapWarning, match="share their prompt with validation pairs"):
        picked = studies.setup("quickstart", None, data="generated", n_train=12, n_eval=12, out_dir=str(tmp_path / "c"),
                               validation_data={"format": "generated", "n": 12, "seed": 0, "split": "test"},
                               critique_cache=str(tmp_path / "c.sqlite"), progress=False)
        studies.load_splits(picked)
    assert picked.notes["validation_overlap"]["generated"]["same_pair"] == 12 and "overlap" not in picked.notes
    picked.finish()
    assert json.loads((tmp_path / "c" / "run.json").read_text())["validation_overlap"] == picked.notes["validation_overlap"]


def test_one_process_per_run_folder(tmp_path):
    """A second process that opens the same run is refused with the holder's pid (two writers
    would train the same RMs and interleave their logs); a killed holder leaves nothing behind,
    and a notebook may open its own run again."""
    import subprocess
    import sys

    from critcore.errors import UserError

    params = {"data": "generated", "out_dir": str(tmp_path / "run"), "critique_cache": str(tmp_path / "c.sqlite"),
              "progress": False}
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
from critcore import studies
run = studies.setup("quickstart", None, **{params!r})
print("holding", flush=True)
time.sleep(600)
"""], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"  # an event, not a timer
        with pytest.raises(UserError, match=rf"another critcore process \(pid {holder.pid}\) is running this run"):
            studies.setup("quickstart", None, **params)
        (tmp_path / "qs.yaml").write_text(yaml.safe_dump({"study": "quickstart", "n_train": 4, "n_eval": 4, **params}))
        with pytest.raises(UserError, match=rf"pid {holder.pid}"):  # `critcore run` too, before its notebook starts
            studies.run_study(tmp_path / "qs.yaml", progress=False)
        assert not list((tmp_path / "run").glob("*.ipynb"))
    finally:
        holder.kill()
        holder.wait()
    run = studies.setup("quickstart", None, **params)  # the kill let go of the folder
    again = studies.setup("quickstart", None, **params)  # this process may open it again
    again.finish()
    run.finish()
    free = subprocess.run([sys.executable, "-c", f"""
from critcore import studies
studies.setup("quickstart", None, **{params!r}).finish()
"""], capture_output=True, text=True, timeout=600)
    assert free.returncode == 0, free.stderr[-2000:]  # finish() let go of it


@pytest.mark.filterwarnings("ignore::critcore.train.TrainingWarning")  # a tiny RM is all this needs
def test_a_study_with_one_seed_trains_that_seed_and_records_it(tmp_path):
    """A study with one training seed keeps its folder name without __s<seed>, but trains at that
    seed (it trained at train.seed whatever was listed) and its row names the seed, so that an
    ablation step naming the seed finds it; with no seed listed, the row names train.seed."""
    from critcore.rms import train_rm

    run = _tiny_quickstart(tmp_path, "r")
    critiqued = studies.critique_all(run, studies.load_splits(run))
    splits, critic = critiqued["none"]
    default = train_rm(run, "minilm", "minilm", "none", splits, critic)
    one = train_rm(run, "minilm", "minilm", "none", splits, critic, seed=1, seed_in_name=False)
    run.finish()
    assert default["row"]["seed"] == run.config.train.seed == 0 and Path(default["dir"]).name == "minilm__none"
    assert one["row"]["seed"] == 1 and Path(one["dir"]).name == "minilm__none"
    assert one["summary"]["train"]["config"]["seed"] == 1 and not one["reused"]  # another seed: trained again


@pytest.mark.filterwarnings("ignore::critcore.train.TrainingWarning")  # a tiny RM is all this needs
def test_the_projection_leaves_out_rms_finished_in_the_run_folder(tmp_path):
    """`critcore run --dry-run` projected every RM as new, so adding one rate to a 27-RM grid
    projected all 27; RMs finished in the run folder with the same training configuration cost
    nothing, and another configuration (here another rate) counts them again."""
    from critcore.studies import budget

    run = _tiny_quickstart(tmp_path, "r")
    profile = budget.PROFILES["fp32"]
    before = {x.step: x for x in budget.project(run.config, profile)}
    studies.quickstart_train_all(run, studies.critique_all(run, studies.load_splits(run)))
    run.finish()
    after = {x.step: x for x in budget.project(run.config, profile)}
    assert (before["train minilm"].count, before["train minilm"].reused) == (2, 0) and before["train minilm"].seconds > 0
    assert (after["train minilm"].count, after["train minilm"].reused) == (0, 2) and after["train minilm"].seconds == 0
    assert after["score minilm"].count == 0 < before["score minilm"].count
    other = budget.project(run.config.replace(train=run.config.train.replace(lr=3e-5)), profile)
    assert [(x.count, x.reused) for x in other if x.step == "train minilm"] == [(2, 0)]
    # an RM whose saved model is gone is trained again (critcore.train reuses only a saved model)
    gone = sorted((Path(run.out_dir) / "rms").glob("*/train/model"))[0]
    shutil.rmtree(gone)
    damaged = {x.step: x for x in budget.project(run.config, profile)}
    assert (damaged["train minilm"].count, damaged["train minilm"].reused) == (1, 1)
