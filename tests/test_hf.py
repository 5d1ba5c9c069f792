"""critcore in the Hugging Face stack: TRL's preference formats (ids derived where missing),
`datasets` objects, save_to_disk folders, Parquet and Arrow files and pandas DataFrames in, through
the CLI and the API, each reaching the same Pair validation; critiqued pairs out as a dataset in
TRL's columns; format hints that name the format a record really matches."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from critcore.data import DataError, load, pairs_of
from critcore.loaders import LOADERS, guess_format

datasets = pytest.importorskip("datasets")
pd = pytest.importorskip("pandas")

CLI = [sys.executable, "-m", "critcore.cli"]
ROOT = Path(__file__).resolve().parents[1]

STANDARD = [{"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"},
            {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."},
            {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."}]
CONVERSATIONAL = [{"prompt": [{"role": "user", "content": r["prompt"]}],
                   "chosen": [{"role": "assistant", "content": r["chosen"]}],
                   "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in STANDARD]
IMPLICIT = [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in CONVERSATIONAL]

# one record of each format (as its loader reads it), to check the hints against
RECORDS = {
    "pandalm": {"idx": 1, "instruction": "i", "input": "", "response1": "a", "response2": "b",
                "annotator1": 1, "annotator2": 1, "annotator3": 2},
    "alpacaeval": {"instruction": "i", "output_1": "a", "output_2": "b", "preference": 1.2},
    "rewardbench": {"id": 3, "prompt": "q", "chosen": "a", "rejected": "b", "subset": "s",
                    "chosen_model": "m", "rejected_model": "n"},
    "ultrafeedback": {"chosen": CONVERSATIONAL[0]["prompt"] + CONVERSATIONAL[0]["chosen"],
                      "rejected": CONVERSATIONAL[0]["prompt"] + CONVERSATIONAL[0]["rejected"],
                      "score_chosen": 8.0, "score_rejected": 3.0},
    "hh-rlhf": {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"},
    "trl": STANDARD[0],
}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=600, cwd=ROOT)


def one_line_error(res, *needles) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("critcore ")]
    assert res.returncode == 2 and "Traceback" not in res.stderr and len(lines) == 1, res.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- TRL's formats


@pytest.mark.parametrize("rows", [STANDARD, CONVERSATIONAL, IMPLICIT], ids=["standard", "conversational", "implicit"])
def test_trl_formats_load_without_ids_and_derive_them_from_the_content(tmp_path, rows):
    a = load(str(write_jsonl(tmp_path / "a.jsonl", rows))).pairs  # a bare path: critcore JSONL takes TRL rows
    b = load(f"trl:{write_jsonl(tmp_path / 'b.jsonl', rows[::-1])}").pairs  # the same rows reversed
    assert [p.chosen for p in a] == ["4", "Paris.", "Hi!"] and [p.rejected for p in a] == ["5", "Lyon.", "No."]
    assert {p.id: p.chosen for p in a} == {p.id: p.chosen for p in b}  # the id follows the content, not the row
    assert len({p.id for p in a}) == 3 and all(p.id.startswith("pair/") for p in a)
    assert load(str(tmp_path / "a.jsonl")).pairs == a  # and is the same in every run
    if rows is not STANDARD:
        assert a[0].prompt == [{"role": "user", "content": "What is 2+2?"}]


def test_a_trl_id_is_kept_and_repeated_rows_without_one_are_counted_skips(tmp_path):
    rows = [{**STANDARD[0], "id": 7}, STANDARD[1], STANDARD[1], {**STANDARD[2], "chosen": "No."}]
    loaded = load(f"trl:{write_jsonl(tmp_path / 'x.jsonl', rows)}")
    assert [p.id for p in loaded.pairs][0] == "7" and len(loaded.pairs) == 2
    assert loaded.skipped == {"duplicate_pair": 1, "identical_responses": 1}


def test_the_cli_critiques_trl_jsonl(tmp_path):
    data = write_jsonl(tmp_path / "trl.jsonl", CONVERSATIONAL)
    res = run("critique", "--critic", "simulated:0.9", "--data", data, "--out", tmp_path / "out.jsonl",
              "--cache", tmp_path / "c.sqlite", "--quiet")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["pairs"] == 3
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == [p.id for p in load(str(data)).pairs] and all(r["chosen_critique"] for r in out)


def test_trl_implicit_prompt_text_is_refused_with_the_reason(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"chosen": "Q: hi A: hello", "rejected": "Q: hi A: go"}])
    with pytest.raises(DataError, match=r"t\.jsonl:1: field 'prompt': missing \(whole texts without a prompt"):
        load(f"trl:{path}")


# ---------------------------------------------------------------- hints


def test_each_format_reads_its_own_record_and_the_hint_names_it():
    """A hint is a format whose conversion takes the record: for each format's record, every
    other loader refuses it naming that format (or, where two formats read it, a format that does)."""
    for fmt, record in RECORDS.items():
        assert guess_format(record) == fmt, fmt
    for fmt, record in RECORDS.items():
        for other in RECORDS:
            if other == fmt:
                continue
            try:
                LOADERS[other]([record])
            except DataError as e:
                hinted = str(e).split("looks like format '")[1].split("'")[0]
                assert LOADERS[hinted]([record]).rows == 1, (fmt, other, str(e))
            else:  # a RewardBench row is also a critcore/TRL row, an UltraFeedback row a TRL one
                assert (fmt, other) in {("rewardbench", "trl"), ("ultrafeedback", "trl")}, (fmt, other)


def test_the_issue_s_record_hints_trl_never_hh_rlhf(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", STANDARD)
    with pytest.raises(DataError, match="looks like format 'trl': give trl:PATH"):
        load(f"hh-rlhf:{path}")
    with pytest.raises(DataError) as e:  # matches no format: no hint
        load(str(write_jsonl(tmp_path / "q.jsonl", [{"question": "q", "good": "a", "bad": "b"}])))
    assert "looks like" not in str(e.value) and "q.jsonl:1: field 'chosen': missing" in str(e.value)
    with pytest.raises(DataError, match="looks like format 'pandalm'"):
        load(str(write_jsonl(tmp_path / "r.jsonl", [RECORDS["pandalm"]])))


# ---------------------------------------------------------------- datasets, tables, DataFrames


def _sources(tmp_path):
    ds = datasets.Dataset.from_list(STANDARD)
    ds.to_parquet(str(tmp_path / "x.parquet"))
    ds.save_to_disk(str(tmp_path / "disk"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dict"))
    return {"Dataset": ds, "DatasetDict": datasets.DatasetDict({"train": ds}), "DataFrame": pd.DataFrame(STANDARD),
            "parquet": str(tmp_path / "x.parquet"), "save_to_disk": str(tmp_path / "disk"),
            "DatasetDict folder": str(tmp_path / "dict"), "arrow": str(next((tmp_path / "disk").glob("*.arrow")))}


def test_every_table_source_loads_the_same_pairs(tmp_path):
    want = load(str(write_jsonl(tmp_path / "x.jsonl", STANDARD))).pairs
    for name, source in _sources(tmp_path).items():
        got = load(source).pairs  # bare: a table is read as format trl
        assert got == want, name
        assert load({"format": "trl", "path": source}).pairs == want, name
    assert load({"format": "trl", "path": STANDARD}).pairs == want  # a list of records (a bare list is specs)
    assert pairs_of(datasets.Dataset.from_list(STANDARD)) == want and pairs_of(want) is want


def test_other_formats_load_from_tables_too(tmp_path):
    df = pd.DataFrame([RECORDS["ultrafeedback"]] * 2 + [{**RECORDS["ultrafeedback"], "score_rejected": 8.0}])
    loaded = load({"format": "ultrafeedback", "path": df})
    assert len(loaded.pairs) == 2 and loaded.skipped == {"tie": 1} and loaded.pairs[0].margin == 5.0
    pq = tmp_path / "pandalm.parquet"
    datasets.Dataset.from_list([RECORDS["pandalm"]]).to_parquet(str(pq))
    assert load(f"pandalm:{pq}").pairs[0].chosen == "a"


def test_bad_rows_name_the_row_and_the_column(tmp_path):
    bad = STANDARD[:2] + [{"prompt": "q", "chosen": 3, "rejected": "b"}]
    with pytest.raises(DataError, match=r"^DataFrame row 2: field 'chosen': expected text or a list of one assistant message, got int$"):
        load(pd.DataFrame(bad).astype({"chosen": object}))
    datasets.Dataset.from_list([{**r, "rating": "meh" if i == 1 else None} for i, r in enumerate(STANDARD)]) \
        .to_parquet(str(tmp_path / "bad.parquet"))
    with pytest.raises(DataError, match=r"bad\.parquet row 1: field 'rating': unknown rating 'meh'"):
        load(str(tmp_path / "bad.parquet"))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"junk\.parquet: not a readable Parquet file"):
        load(str(tmp_path / "junk.parquet"))
    two = datasets.DatasetDict({"train": datasets.Dataset.from_list(STANDARD), "test": datasets.Dataset.from_list(STANDARD)})
    with pytest.raises(DataError, match="field 'split': 2 splits; give one of train, test"):
        load(two)
    assert len(load({"format": "trl", "path": two, "split": "test"}).pairs) == 3
    # the command line: a save_to_disk folder and a Parquet file with a bad row
    res = run("critique", "--critic", "simulated:0.9", "--data", tmp_path / "bad.parquet", "--out", tmp_path / "o.jsonl",
              "--cache", tmp_path / "c.sqlite")
    one_line_error(res, "bad.parquet row 1: field 'rating'")
    assert not (tmp_path / "o.jsonl").exists()


# ---------------------------------------------------------------- out: a dataset in TRL's columns


@pytest.mark.parametrize("out", ["critiqued.parquet", "critiqued"])
def test_critique_writes_a_dataset_in_trl_columns_with_the_critic(tmp_path, out):
    from critcore.export import read_info

    ds = datasets.Dataset.from_list(STANDARD)
    ds.save_to_disk(str(tmp_path / "in"))
    res = run("critique", "--critic", "simulated:0.9", "--data", tmp_path / "in", "--out", tmp_path / out,
              "--cache", tmp_path / "c.sqlite", "--quiet")
    assert res.returncode == 0, res.stderr[-2000:]
    if out.endswith(".parquet"):
        got = datasets.load_dataset("parquet", data_files=str(tmp_path / out), split="train")
        import pyarrow.parquet as pq

        meta = json.loads(pq.read_schema(tmp_path / out).metadata[b"critcore"])
    else:
        got = datasets.load_from_disk(str(tmp_path / out))
        meta = read_info(got)
    assert got.column_names == ["id", "prompt", "chosen", "rejected", "chosen_critique", "rejected_critique",
                                "critic", "critic_config"]
    assert got["chosen"] == ["4", "Paris.", "Hi!"] and all(got["chosen_critique"]) and all(got["rejected_critique"])
    assert meta["critic"]["identity"] == "simulated(p=0.9,seed=0)" == got["critic"][0]
    assert "{critique}" in meta["critique_template"]
    back = load(str(tmp_path / out)).pairs  # critcore reads it back, critiques and their critic included
    assert all(p.has_critiques and p.meta["critic"] == "simulated(p=0.9,seed=0)" for p in back)
    assert [p.chosen_critique for p in back] == got["chosen_critique"]


def test_a_conversational_dataset_is_written_conversational(tmp_path):
    from critcore.critique import augment
    from critcore.export import write_dataset

    pairs = augment(datasets.Dataset.from_list(CONVERSATIONAL), "simulated:0.9", progress=False)  # a Dataset in
    write_dataset(tmp_path / "c.parquet", pairs)
    got = datasets.load_dataset("parquet", data_files=str(tmp_path / "c.parquet"), split="train")
    assert got[0]["prompt"] == [{"role": "user", "content": "What is 2+2?"}]
    assert got[0]["chosen"] == [{"role": "assistant", "content": "4"}]
    assert load(str(tmp_path / "c.parquet")).pairs == pairs


@pytest.mark.slow
def test_round_trip_dataset_critique_parquet_trl_reward_trainer(tmp_path, shared_data):
    """The mix as a Dataset -> `critcore critique` -> Parquet -> datasets.load_dataset("parquet")
    -> TRL's RewardTrainer for a few steps on MiniLM, the critique folded into each completion with
    the template the dataset's info carries (no critcore code): the critique reaches the inputs."""
    trl = pytest.importorskip("trl")
    import pyarrow.parquet as pq
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from critcore.backbones import resolve

    rows = [json.loads(x) for x in (shared_data / "mix" / "validation.jsonl").read_text().splitlines()]
    rows = sorted(rows, key=lambda r: len(r["prompt"]) + len(r["chosen"]) + len(r["rejected"]))[:8]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "mix"))
    res = run("critique", "--critic", "simulated:0.9", "--data", tmp_path / "mix", "--out", tmp_path / "c.parquet",
              "--cache", tmp_path / "c.sqlite", "--quiet")
    assert res.returncode == 0, res.stderr[-2000:]

    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "c.parquet"), split="train")
    info = json.loads(pq.read_schema(tmp_path / "c.parquet").metadata[b"critcore"])
    fold = info["critique_template"]
    ds = ds.map(lambda r: {"chosen": fold.format(completion=r["chosen"], critique=r["chosen_critique"]),
                           "rejected": fold.format(completion=r["rejected"], critique=r["rejected_critique"])})
    path = resolve("minilm", "model")
    tok = AutoTokenizer.from_pretrained(path)
    tok.eos_token = tok.sep_token  # a BERT tokenizer has no EOS, which TRL appends to standard rows
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    args = trl.RewardConfig(output_dir=str(tmp_path / "trl"), max_steps=3, per_device_train_batch_size=2,
                            max_length=512, report_to="none", use_cpu=True, logging_steps=1, save_strategy="no")
    trainer = trl.RewardTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    assert len(trainer.train_dataset) == 8  # none dropped as too long
    first = trainer.train_dataset[0]
    critique = tok(ds[0]["chosen_critique"], add_special_tokens=False)["input_ids"]
    ids = first["chosen_ids"]
    assert any(ids[i:i + len(critique)] == critique for i in range(len(ids))), "the critique is not in TRL's input"
    out = trainer.train()
    assert out.global_step == 3 and all(torch_finite(x["loss"]) for x in trainer.state.log_history if "loss" in x)


def torch_finite(x) -> bool:
    import math

    return math.isfinite(float(x))


# ---------------------------------------------------------------- model cards, --push-to-hub


@pytest.fixture(scope="module")
def carded(tmp_path_factory):
    """A MiniLM RM saved with a critique recipe (UltraFeedback pairs), then evaluated: its card."""
    from critcore.evaluate import evaluate
    from critcore.model import RewardModel
    from critcore.recipe import TrainConfig
    from critcore.train import recipe

    folder = tmp_path_factory.mktemp("card") / "my-rm"
    pairs = load({"format": "ultrafeedback", "path": pd.DataFrame([RECORDS["ultrafeedback"]])}).pairs
    critic = {"identity": "simulated(p=0.9,seed=0)", "config": "0e17ecb6fb24"}
    rm = RewardModel.load("minilm")
    rm.save(folder, recipe(TrainConfig(lr=1e-4, seed=3, max_length=64), pairs, critic))
    before = (folder / "README.md").read_text()
    tied = load(str(write_jsonl(folder.parent / "t.jsonl", [{**r, "tie": i == 0, "source": "pandalm"}
                                                             for i, r in enumerate(STANDARD)]))).pairs
    summary = evaluate(rm, {"mine": datasets.Dataset.from_list(STANDARD), "pl": tied}, max_length=64,
                       allow_critic_mismatch=True, n_boot=50)
    rm.add_results(summary)
    return rm, folder, before, summary


def test_a_saved_rm_has_a_model_card_with_the_hub_metadata(carded):
    from huggingface_hub import ModelCard, metadata_load

    rm, folder, before, _ = carded
    assert "Not evaluated yet" in before
    meta = metadata_load(folder / "README.md")
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and meta["library_name"] == "transformers"
    assert {"reward-model", "critcore"} <= set(meta["tags"])
    assert meta["datasets"] == ["HuggingFaceH4/ultrafeedback_binarized"]
    text = ModelCard.load(folder / "README.md").text
    for needle in ("| critic | `simulated(p=0.9,seed=0)` (config 0e17ecb6fb24) |", "| learning rate | 0.0001 |",
                   "| seed | 3 |", "| max_length | 64 |", "| training pairs | 1 |", "critcore score --model"):
        assert needle in text, needle


def test_the_card_carries_the_evaluation_numbers(carded):
    from huggingface_hub import ModelCard

    _, folder, _, summary = carded
    results = ModelCard.load(folder / "README.md").data.eval_results
    got = {(r.dataset_name, r.metric_name): r.metric_value for r in results}
    assert got[("mine", "accuracy")] == round(summary["mine"]["overall"]["acc"], 4)
    assert got[("pl", "accuracy (ties dropped)")] == round(summary["pl"]["pandalm"]["drop"]["acc"], 4)
    assert got[("pl", "accuracy (ties counted wrong)")] == round(summary["pl"]["pandalm"]["wrong"]["acc"], 4)
    assert summary["pl"]["pandalm"]["drop"]["n"] == 2 and summary["pl"]["pandalm"]["wrong"]["n"] == 3


def test_the_card_s_transformers_snippet_gives_critcores_reward(carded):
    """The 'transformers alone' code of the card, run as written (the repo being the folder), gives
    the reward critcore gives the same response and critique."""
    from huggingface_hub import ModelCard

    from critcore.evaluate import score_one

    rm, folder, _, _ = carded
    text = ModelCard.load(folder / "README.md").text
    code = text.split("```python\n")[1].split("```")[0].replace('"my-rm"', repr(str(folder)))
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - the card's own example
    want = score_one(rm, "What is 2+2?", "4", scope["critique"])
    assert scope["reward"] == pytest.approx(want, abs=1e-4)


class _Hub:
    """A stand-in for huggingface_hub.HfApi that records the calls push makes (no network)."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", kw["repo_id"], kw))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{kw['repo_id']}/commit/1"})()


def test_push_to_hub_takes_its_token_from_the_environment(carded, monkeypatch, tmp_path):
    import shutil

    from huggingface_hub import ModelCard

    from critcore import card
    from critcore.errors import ConfigError

    _, folder, _, _ = carded
    copy = tmp_path / "my-rm"
    shutil.copytree(folder, copy)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    hub = _Hub()
    with pytest.raises(ConfigError, match=r"set \$HF_TOKEN"):
        card.push(copy, "me/my-rm", api=hub)
    assert hub.calls == []
    monkeypatch.setenv("HF_TOKEN", "hf_secret_for_test")
    assert card.push(copy, "me/my-rm", api=hub) == "https://huggingface.co/me/my-rm/commit/1"
    (_, repo, create), (_, repo2, upload) = hub.calls
    assert repo == repo2 == "me/my-rm" and create["token"] == upload["token"] == "hf_secret_for_test"
    assert upload["folder_path"] == str(copy) and upload["repo_type"] == "model"
    card_text = (copy / "README.md").read_text()
    assert 'from_pretrained("me/my-rm")' in card_text and "hf_secret" not in card_text
    assert ModelCard.load(copy / "README.md").data.eval_results  # the results stay
    assert not any("hf_secret" in p.read_text(errors="ignore") for p in copy.rglob("*") if p.is_file())


def test_cli_push_to_hub_without_a_token_fails_before_training(tmp_path, shared_data, monkeypatch, capsys):
    from critcore.cli import main

    monkeypatch.delenv("HF_TOKEN", raising=False)
    code = main(["train", "--train", f"{shared_data}/mix/validation.jsonl", "--limit", "8", "--out",
                 str(tmp_path / "t"), "--push-to-hub", "me/rm"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "push_to_hub 'me/rm'" in err and "$HF_TOKEN" in err, err
    assert not (tmp_path / "t").exists()
