"""Every study notebook runs through papermill on tiny parameters and leaves its artifacts:
the executed notebook, table CSVs with the promised columns, charts as non-empty HTML and PNG,
and run.json. The quickstart runs through `critcore run` (run_study) with the real SmolLM2
critic on a few generated pairs; RQ1 through run_study and RQ2 through the papermill command
line (-f YAML -p out_dir), both on slices of the shared data with simulated critics."""
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from critcore import config, studies
from critcore.studies.protocol import WORDS
from critcore import run as run_mod

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
OURS = {study: Path(config.SCHEMAS[study]().notebook).name for study in config.STUDIES}
TINY_TRAIN = {"max_length": 64, "lr": 1.0e-4, "batch_size": 8, "micro_batch_size": 8, "epochs": 1}
METRICS = ["Chat", "Chat Hard", "Safety", "Reasoning", "Score", "PandaLM"]


def _parameters_cell(nb):
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    return cells[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_every_notebook_has_a_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert _parameters_cell(nb).cell_type == "code"


def test_every_notebook_is_a_study():
    assert sorted(OURS.values()) == sorted(p.name for p in NOTEBOOKS)


@pytest.mark.parametrize("study", sorted(OURS))
def test_study_notebooks_declare_the_schema_and_stay_thin(study):
    path = ROOT / "notebooks" / OURS[study]
    declared = studies.notebook_parameters(path)
    assert set(declared) == set(config.SCHEMAS[study].model_fields)
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "critcore"
    for cell in nb.cells:
        if cell.cell_type != "code" or "parameters" in cell.metadata.get("tags", []):
            continue
        assert "def " not in cell.source and "class " not in cell.source and "import " not in cell.source.replace(
            "from critcore import studies", "")
        assert len(cell.source.splitlines()) <= 8
        assert not cell.get("outputs"), "commit notebooks without outputs"


def _check_run(out: Path, study: str, notebook: str, tables: dict, charts: list[str], runner: bool):
    executed = out / notebook
    assert executed.is_file()
    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    frames = {}
    for name, columns in tables.items():
        df = pd.read_csv(out / f"{name}.csv")
        assert len(df) > 0
        missing = [c for c in columns if c not in df.columns]
        assert not missing, f"{name}.csv lacks {missing}"
        frames[name] = df
    for name in charts:
        html, png = out / f"{name}.html", out / f"{name}.png"
        text = html.read_text()
        assert html.stat().st_size > 500 and "vega" in text
        assert "<script src=\"http" not in text and "cdn.jsdelivr" not in text  # renders offline
        assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((out / "run.json").read_text())
    for key in ("study", "run_id", "status", "config", "git", "versions", "wall", "critique_cache", "rms", "artifacts"):
        assert key in record, key
    assert record["config"] == config.to_dict(config.resolve(config.SCHEMAS[study], record["config"]))
    assert record["study"] == study and record["status"] == "completed"
    for pkg in ("torch", "transformers", "critcore", "papermill"):
        assert record["versions"][pkg]
    assert record["wall"]["total_s"] > 0 and record["wall"]["steps"]
    assert "by_critic" in record["critique_cache"] and record["critique_cache"]["records"] > 0
    assert (record["runner"] is not None) == runner
    if runner:
        assert record["runner"]["wall_s"] >= record["wall"]["total_s"]
    return frames, record


def _write(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.mark.slow
def test_quickstart_runs_with_the_real_smollm2_critic(tmp_path):
    params = _write(tmp_path / "qs.yaml", {
        "study": "quickstart", "notebook": "notebooks/quickstart.ipynb", "data": "generated", "n_train": 2, "n_eval": 2,
        "critic": "smollm2", "critic_options": {"max_new_tokens": 12, "batch_size": 8, "max_chars": 200},
        "train": TINY_TRAIN, "threads": 1, "n_boot": 100, "critique_cache": str(tmp_path / "c.sqlite")})
    out = studies.run_study(params, run_id="tiny", out_root=tmp_path / "outputs", progress=False)
    assert out == (tmp_path / "outputs" / "quickstart" / "tiny").resolve()
    frames, record = _check_run(out, "quickstart", "quickstart.ipynb",
                                {"results": ["backbone", "critic", "metric", "acc", "lo", "hi"]}, ["accuracy"], runner=True)
    assert set(frames["results"]["critic"]) == {"none", "smollm2"}
    assert "Score" in set(frames["results"]["metric"])
    smol = record["critique_cache"]["by_critic"]["smollm2"]
    assert smol["critic"] == "local:smollm2" and smol["generated"] == 8 and smol["tokens_generated"] > 0
    assert record["critique_cache"]["path"] == str(tmp_path / "c.sqlite")
    assert sorted(p.name for p in (out / "rms").iterdir()) == ["minilm__none", "minilm__smollm2"]


@pytest.mark.slow
def test_rq1_notebook_table_tests_and_charts(tmp_path, shared_data):
    params = _write(tmp_path / "rq1.yaml", {
        "study": "rq1", "notebook": "notebooks/rq1_critic_quality.ipynb", "backbones": ["minilm"],
        "critics": {"none": "none", "simulated-0.9": "simulated:0.9"},
        "train_data": {"format": "jsonl", "path": "${data}/mix/train.jsonl", "limit": 16, "seed": 0, "stratify": None},
        "eval_data": {"rewardbench": {"format": "rewardbench", "path": "${data}/reward-bench-local/filtered.jsonl",
                                      "per_stratum": 1, "seed": 0},
                      "pandalm": {"format": "pandalm", "path": "${data}/pandalm/testset-v1.json", "limit": 8, "seed": 0}},
        "validation_data": {"format": "jsonl", "path": "${data}/mix/validation.jsonl", "limit": 8, "seed": 0},
        "lr_sweep": [1e-4, 2e-4], "sections": "${data}/reward-bench-local/sections.json", "train": TINY_TRAIN,
        "threads": 1, "critique_cache": str(tmp_path / "c.sqlite"),
        "ablation": [{"label": "fixed", "arm": "simulated-0.9", "lr": 1e-4, "weighting": "equal"},
                     {"label": "per arm", "arm": "simulated-0.9", "rule": "per_arm"}]})
    out = studies.run_study(params, out_root=tmp_path / "outputs", progress=False)
    assert out.name == "rq1"  # run id: the params file's stem
    columns = ["backbone", "critic", "lr"] + [f"{m}{s}" for m in METRICS for s in ("", " lo", " hi")] + \
        ["Score change", "PandaLM change", "p RewardBench", "p PandaLM"]
    lengths = ["backbone", "critic", "eval", "n", "reward-length rho", "rejected longer", "rejected longer lo",
               "rejected longer hi", "rejected longer n", "alpacaeval-length", "alpacaeval-length n"]
    effects = ["backbone", "metric", "critic", "comparison", "rule", "lr", "lr No-Critiques", "change", "lo", "hi", "p",
               "McNemar p per seed"]
    verdicts = ["backbone", "critic", "Score selection", "Score change", "Score lo", "Score hi", "Score robustness",
                "Score why", "PandaLM robustness", "suite vs PandaLM"]
    frames, record = _check_run(out, "rq1", "rq1_critic_quality.ipynb", {
        "rq1_table": columns, "length_bias": lengths, "rq1_effects": effects, "rq1_verdicts": verdicts,
        "rq1_probe": ["critic", "critic_p", "information", "information lo", "information hi"],
        "rq1_information": ["critic", "kind", "information", "Score change", "lo", "hi", "lr"],
        "rq1_ablation": ["step", "arm", "weighting", "learning rate", "Score change", "Score lo", "Score hi", "sign"]},
        ["rq1_score", "rq1_pandalm", "rq1_dose_response", "rq1_effects", "rq1_information"], runner=True)
    # every arm at every rate; the effects at each rate and as picked on validation, each with its word
    assert sorted(p.name for p in (out / "rms").iterdir()) == [
        "minilm__none__lr0.0001", "minilm__none__lr0.0002", "minilm__simulated-0.9__lr0.0001", "minilm__simulated-0.9__lr0.0002"]
    e = frames["rq1_effects"]
    assert set(e["comparison"]) == {"lr 0.0001", "lr 0.0002", "best on validation, shared", "best on validation, per arm"}
    assert (e["lo"] <= e["change"]).all() and (e["change"] <= e["hi"]).all()
    v = frames["rq1_verdicts"].iloc[0]
    assert v["Score robustness"] in WORDS and v["Score selection"] == "best on validation, shared"
    protocol = record["lr_protocol"]["minilm"]
    assert protocol["rule"] == "shared" and protocol["grid"] == [1e-4, 2e-4] and protocol["validation_pairs"] == 8
    assert protocol["picked"]["none"] == protocol["picked"]["simulated-0.9"]  # one rate for every arm
    assert frames["rq1_probe"].loc[0, "critic_p"] == 0.9 and 0 <= frames["rq1_probe"].loc[0, "information"] <= 100
    assert list(frames["rq1_ablation"]["step"]) == ["fixed", "per arm"]
    t = frames["rq1_table"]
    t = t[t["lr"] == 1e-4].set_index("critic")
    assert t.loc["none", "Score"] > 0 and pd.isna(t.loc["none", "p RewardBench"])
    assert 0 < t.loc["simulated-0.9", "p RewardBench"] <= 1 and 0 < t.loc["simulated-0.9", "p PandaLM"] <= 1
    assert t.loc["simulated-0.9", "critic_p"] == 0.9
    assert (t["Score lo"] <= t["Score"]).all() and (t["Score"] <= t["Score hi"]).all()
    # The same table again from the run folder alone (load_results), as for an interrupted run.
    resolved = json.loads((out / "run.json").read_text())["config"]
    again = studies.rq1_table(resolved, studies.load_results(out))
    again = again[again["lr"] == 1e-4].set_index("critic")
    for col in ("Score", "PandaLM", "Score change", "p RewardBench", "p PandaLM"):
        pd.testing.assert_series_equal(again[col], t[col], check_dtype=False, rtol=1e-9)
    # and its effects and words (scripts/rq1_verdicts.py), the run's own bootstrap draws
    effects_again, verdicts_again = studies.rq1_effects(resolved, studies.load_results(out))
    effects_again.to_csv(tmp_path / "effects_again.csv", index=False)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "effects_again.csv"), e, check_dtype=False, rtol=1e-9)
    assert list(verdicts_again["Score robustness"]) == list(frames["rq1_verdicts"]["Score robustness"])
    lb = frames["length_bias"]
    assert "validation" not in set(lb["eval"])
    lb = lb[lb["lr"] == 1e-4].set_index(["critic", "eval"])
    assert len(lb) == 4 and (lb["reward-length rho"].abs() <= 1).all()
    assert lb.loc[("none", "rewardbench"), "alpacaeval-length n"] == 1  # per_stratum 1
    assert lb.loc[("none", "pandalm"), "alpacaeval-length n"] == 0 and pd.isna(lb.loc[("none", "pandalm"), "alpacaeval-length"])
    assert (lb["rejected longer n"] > 0).all() and lb["rejected longer"].between(0, 100).all()
    # An ablation run without No-Critiques of its own, over this run (compare_runs), as
    # params/rq1_ablation.yaml: it has no effects of its own and still completes, with its ablation table.
    # Without validation data of its own, as there: its fixed-rate steps choose nothing on validation.
    first = {k: v for k, v in yaml.safe_load(params.read_text()).items() if k not in ("validation_data", "lr_sweep")}
    params2 = _write(tmp_path / "abl.yaml", {**first, "critics": {"simulated-0.7": "simulated:0.7"},
                                            "train": {**TINY_TRAIN, "lr": 1e-4}, "probe": False,
                                            "compare_runs": [str(out)],
                                            "ablation": [{"label": "0.7 vs 0.9", "arm": "simulated-0.7", "lr": 1e-4},
                                                         {"label": "0.9", "arm": "simulated-0.9", "lr": 1e-4}]})
    abl = studies.run_study(params2, out_root=tmp_path / "outputs", progress=False)
    steps = pd.read_csv(abl / "rq1_ablation.csv")
    assert list(steps["step"]) == ["0.7 vs 0.9", "0.9"] and steps["Score change"].notna().all()


@pytest.mark.slow
def test_rq2_notebook_through_the_papermill_cli(tmp_path, shared_data):
    params = _write(tmp_path / "rq2.yaml", {
        "study": "rq2", "notebook": "notebooks/rq2_scaling.ipynb", "backbone": "minilm",
        "critics": {"none": "none", "simulated-1.0": "simulated:1.0"}, "sizes": [8, 16],
        "train_data": {"format": "jsonl", "path": "${data}/mix/train.jsonl"},
        "eval_data": {"rewardbench": {"format": "rewardbench", "path": "${data}/reward-bench-local/filtered.jsonl",
                                      "per_stratum": 1, "seed": 0},
                      "pandalm": {"format": "pandalm", "path": "${data}/pandalm/testset-v1.json", "limit": 8, "seed": 0}},
        "sections": "${data}/reward-bench-local/sections.json", "train": TINY_TRAIN, "threads": 1, "n_boot": 100,
        "progress": False})
    out = tmp_path / "out"
    out.mkdir()  # papermill writes the executed notebook into an existing folder
    proc = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "rq2_scaling.ipynb"),
                           str(out / "rq2_scaling.ipynb"), "-f", str(params), "-p", "out_dir", str(out),
                           "-p", "critique_cache", str(tmp_path / "c.sqlite"), "--no-progress-bar"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    frames, record = _check_run(out, "rq2", "rq2_scaling.ipynb", {
        "rq2_table": ["critic", "size", "n_train"] + METRICS,
        "rq2_curves": ["critic", "size", "metric", "acc", "lo", "hi"],
        "rq2_worth_n": ["critic", "metric", "size", "acc", "base_acc", "equivalent_size", "ratio", "lo", "hi", "status"],
    }, ["rq2_score", "rq2_sections", "rq2_worth_n"], runner=False)
    table = frames["rq2_table"]
    assert sorted(zip(table["critic"], table["size"])) == [("none", 8), ("none", 16), ("simulated-1.0", 8), ("simulated-1.0", 16)]
    assert (table["n_train"] == table["size"]).all()
    assert set(frames["rq2_curves"]["metric"]) >= set(METRICS)
    worth = frames["rq2_worth_n"]
    assert set(worth["metric"]) == {"Score", "PandaLM"} and set(worth["size"]) == {8, 16}
    assert set(worth["status"]) <= {"interpolated", "at_or_below_min", "not_reached", "undefined"}
    assert record["run_id"].startswith("nb-")  # no run id given: a hash of the parameters
    assert sorted(p.name for p in (out / "rms").iterdir()) == [
        "minilm__none__n16", "minilm__none__n8", "minilm__simulated-1.0__n16", "minilm__simulated-1.0__n8"]


def test_a_misspelt_papermill_parameter_fails_in_the_first_cell(tmp_path):
    """papermill only warns of a name the parameters cell does not declare; the notebook then ran on
    the default. studies.setup reads papermill's injected cell and refuses the name, as `critcore
    run` and `critcore config` do, before any run folder exists."""
    params = _write(tmp_path / "qs.yaml", {"n_trian": 4, "data": "generated"})
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "quickstart.ipynb"),
                           str(out / "quickstart.ipynb"), "-f", str(params), "-p", "out_dir", str(out / "run"),
                           "--no-progress-bar"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode != 0
    assert "unknown key 'n_trian'; did you mean 'n_train'?" in proc.stderr
    assert not (out / "run").exists()
    # the same names, spelt right, pass the check (no run is started here)
    names = run_mod._injected({"In": ["", "# Parameters\nn_train = 4\ndata = \"generated\"\n", "x = 1"]})
    assert names == ["n_train", "data"]
    with pytest.raises(config.ConfigError, match="unknown key 'n_trian'"):
        studies.setup("quickstart", {"In": ["# Parameters\nn_trian = 4\n"], "n_trian": 4})
