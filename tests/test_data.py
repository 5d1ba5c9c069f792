"""Dataset loaders: real shared files with their known counts, and bad input on small temp files."""
import json
import re
import subprocess
import sys
from collections import Counter

import pytest

from critcore.data import DataError, load, nested_subsets, parse_spec, read_pairs, sample, write_pairs
from critcore.loaders import (load_alpacaeval, load_hh_rlhf, load_jsonl, load_pandalm, load_rewardbench,
                              load_ultrafeedback, pandalm_majority)
from critcore.readers import Loaded
from critcore.records import Pair


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _unique_ids(loaded: Loaded):
    assert len({p.id for p in loaded.pairs}) == len(loaded.pairs)


def _accounted(loaded: Loaded, rows: int):
    assert loaded.rows == rows == len(loaded.pairs) + sum(loaded.skipped.values())


def _mix_index(shared_data, source):
    rows = [json.loads(line) for f in ("train", "validation") for line in open(shared_data / f"mix/{f}.jsonl")]
    return {(r["prompt"], r["chosen"], r["rejected"]): r for r in rows if r["source"] == source}


# --- real files ---------------------------------------------------------------------------------

def test_hh_rlhf_real(shared_data):
    hh = load_hh_rlhf(shared_data / "hh-rlhf/harmless-base-test.jsonl")
    _accounted(hh, 2312)
    assert hh.skipped == {"no_shared_prefix": 4, "empty_response": 4}
    assert len(hh) == 2304 and hh.source == "hh-rlhf"
    _unique_ids(hh)
    ids = {p.id for p in hh.pairs}
    # the 4 rows whose chosen response itself contains '\n\nAssistant:'; row 1950 (rejected does) is kept
    assert {f"hh-rlhf/harmless-base-test/{i}" for i in (1254, 1688, 1952, 2036)}.isdisjoint(ids)
    assert "hh-rlhf/harmless-base-test/1950" in ids
    for p in hh.pairs:
        roles = [m["role"] for m in p.prompt]
        assert roles[0] == "user" and roles[-1] == "user"
        assert all(m["content"] == m["content"].strip() for m in p.prompt)
        assert p.chosen == p.chosen.strip() and p.chosen != p.rejected
        assert p.rating is None and p.margin is None
    first = json.loads(open(shared_data / "hh-rlhf/harmless-base-test.jsonl").readline())
    p0 = hh.pairs[0]
    assert p0.id == "hh-rlhf/harmless-base-test/0"
    text = "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in p0.prompt)
    assert first["chosen"].startswith(text) and first["chosen"].endswith(p0.chosen)


def test_pandalm_real(shared_data):
    path = shared_data / "pandalm/testset-v1.json"
    raw = json.loads(path.read_text())
    votes = Counter(pandalm_majority([r["annotator1"], r["annotator2"], r["annotator3"]]) for r in raw)
    assert votes == {1: 422, 2: 472, 0: 105}

    loaded = load_pandalm(path)
    _accounted(loaded, 999)
    # ties are kept (marked), for both tie policies; a JSON boolean is no response text
    assert loaded.skipped == {"empty_response": 54, "non_text_response": 6}
    assert sum(p.tie for p in loaded.pairs) == 103  # 2 of the 105 ties have an empty response
    assert sum(not p.tie for p in loaded.pairs) == 836
    _unique_ids(loaded)
    assert {p.subset for p in loaded.pairs} == {"pandalm"} == {p.source for p in loaded.pairs}
    by_id = {p.id: p for p in loaded.pairs}
    for r in raw:  # the chosen side follows the majority
        p = by_id.get(f"pandalm/{r['idx']}")
        if p and not p.tie:
            label = pandalm_majority(p.meta["votes"])
            assert p.chosen == r[f"response{label}"] and p.rejected == r[f"response{3 - label}"]
            assert p.prompt == r["instruction"] + (f"\n\n{r['input']}" if r["input"].strip() else "")
    bools = [r["idx"] for r in raw if isinstance(r["response1"], bool) or isinstance(r["response2"], bool)]
    assert len(bools) == 6 and not any(f"pandalm/{i}" in by_id for i in bools)


def test_rewardbench_real(shared_data):
    rb = load_rewardbench(shared_data / "reward-bench-local/filtered.jsonl")
    _accounted(rb, 2556)
    assert rb.skipped == {} and len(rb) == 2556
    _unique_ids(rb)
    sections = json.loads((shared_data / "reward-bench-local/sections.json").read_text())
    expected = {s: n for subsets in sections.values() for s, n in subsets.items()}
    assert len(expected) == 21
    assert Counter(p.subset for p in rb.pairs) == expected
    p = rb.pairs[0]
    assert p.id == "rewardbench/0" and p.source == "rewardbench" and isinstance(p.prompt, str)
    assert p.meta == {"chosen_model": "gpt4_1106_preview", "rejected_model": "alpaca-7b"}


def test_ultrafeedback_real(shared_data):
    path = shared_data / "ultrafeedback/binarized-sample.jsonl"
    uf = load_ultrafeedback(path)
    _accounted(uf, 1200)
    assert uf.skipped == {"tie": 136, "identical_responses": 3, "empty_response": 2}
    _unique_ids(uf)
    for p in uf.pairs:
        assert [m["role"] for m in p.prompt] == ["user"]
        assert p.margin == p.meta["score_chosen"] - p.meta["score_rejected"] > 0
        assert not p.tie
    assert uf.pairs[0].id == "ultrafeedback/binarized-sample/0"

    # rating and margin agree with the shared mix's UltraFeedback rows
    mix = _mix_index(shared_data, "ultrafeedback")
    matched = [(p, mix[k]) for p in uf.pairs if (k := (p.prompt[0]["content"], p.chosen, p.rejected)) in mix]
    assert len(matched) > 1000
    assert all(p.rating == m["rating"] and p.margin == m["margin"] for p, m in matched)

    kept = load_ultrafeedback(path, keep_ties=True)
    _accounted(kept, 1200)
    assert kept.skipped == {"identical_responses": 5, "empty_response": 2}
    ties = [p for p in kept.pairs if p.tie]
    assert len(ties) == 134 and all(p.margin == 0 and p.rating is None for p in ties)


def test_alpacaeval_real(shared_data):
    ae = load_alpacaeval(shared_data / "alpacaeval/weighted-gpt4-turbo-annotations.jsonl")
    _accounted(ae, 1645)
    assert ae.skipped == {"empty_response": 1}
    _unique_ids(ae)
    mix = _mix_index(shared_data, "alpacaeval-2")
    matched = [(p, mix[(p.prompt, p.chosen, p.rejected)]) for p in ae.pairs if (p.prompt, p.chosen, p.rejected) in mix]
    assert len(matched) == 1644
    assert all(p.rating == m["rating"] and p.margin == m["margin"] for p, m in matched)
    p = ae.pairs[0]
    assert p.meta["chosen_model"] == "gpt4_1106_preview" and p.meta["preference"] < 1.5


def test_mix_real(shared_data):
    train = load_jsonl(shared_data / "mix/train.jsonl")
    _accounted(train, 4809)
    assert train.skipped == {"identical_responses": 3, "empty_response": 7}
    val = load_jsonl(shared_data / "mix/validation.jsonl")
    _accounted(val, 207)
    assert val.skipped == {} and len(val) == 207
    assert Counter(p.source for p in val.pairs) == {"alpacaeval-2": 85, "hh-rlhf/harmless-base": 79, "ultrafeedback": 43}
    with pytest.raises(DataError, match=r"train\.jsonl:427: field 'rejected'"):
        read_pairs(shared_data / "mix/train.jsonl")  # strict reader refuses what load_jsonl skips


def test_load_dispatch_real(shared_data):
    rb_path = shared_data / "reward-bench-local/filtered.jsonl"
    assert len(load(f"rewardbench:{rb_path}")) == 2556
    spec = {"format": "rewardbench", "path": str(rb_path), "limit": 210, "seed": 3}
    a, b = load(spec), load(dict(spec))
    assert [p.id for p in a.pairs] == [p.id for p in b.pairs] and len(a) == 210
    assert len(Counter(p.subset for p in a.pairs)) == 21  # stratified by subset
    assert a.rows == 2556
    pl = load({"format": "pandalm", "path": str(shared_data / "pandalm/testset-v1.json")})
    assert pl.skipped == {"empty_response": 54, "non_text_response": 6}
    with pytest.raises(DataError, match="tie_policy.*both policies"):
        load({"format": "pandalm", "path": str(shared_data / "pandalm/testset-v1.json"), "tie_policy": "wrong"})
    both = load([f"rewardbench:{rb_path}", {"format": "pandalm", "path": str(shared_data / "pandalm/testset-v1.json")}])
    assert len(both) == 2556 + 939 and both.skipped == pl.skipped and both.rows == 2556 + 999


# --- bad input ----------------------------------------------------------------------------------

GOOD = {"id": "a", "prompt": "Q?", "chosen": "yes", "rejected": "no", "rating": "better", "margin": 1.0}


@pytest.mark.parametrize("bad, field", [
    ({k: v for k, v in GOOD.items() if k != "chosen"}, "chosen"),  # missing field
    ({**GOOD, "chosen": 5}, "chosen"),  # wrong type
    ({**GOOD, "chosen": True}, "chosen"),  # boolean response
    ({**GOOD, "prompt": "  "}, "prompt"),  # empty text
    ({**GOOD, "rating": "much better"}, "rating"),  # unknown rating
    ({**GOOD, "margin": float("nan")}, "margin"),  # NaN margin (json writes NaN)
    ({**GOOD, "id": "first"}, "id"),  # duplicate id
])
def test_jsonl_bad_record(tmp_path, bad, field):
    f = _jsonl(tmp_path / "pairs.jsonl", [{**GOOD, "id": "first"}, bad])
    with pytest.raises(DataError) as e:
        load_jsonl(f)
    assert str(f) in str(e.value) and "pairs.jsonl:2:" in str(e.value) and f"'{field}'" in str(e.value)


def test_jsonl_invalid_json_line(tmp_path):
    f = _jsonl(tmp_path / "pairs.jsonl", [GOOD, "", '{"id": "b", "prompt": '])
    with pytest.raises(DataError, match=r"pairs\.jsonl:3: invalid JSON"):
        load_jsonl(f)


def test_jsonl_degenerate_pairs_counted(tmp_path):
    f = _jsonl(tmp_path / "pairs.jsonl", [GOOD, {**GOOD, "id": "b", "chosen": " "}, {**GOOD, "id": "c", "rejected": "yes"}])
    loaded = load_jsonl(f)
    assert [p.id for p in loaded.pairs] == ["a"]
    assert loaded.skipped == {"empty_response": 1, "identical_responses": 1}
    for line, field in ((2, "chosen"), (3, "rejected")):  # the strict reader refuses them
        g = _jsonl(tmp_path / f"strict{line}.jsonl", [{**GOOD, "id": str(i)} for i in range(line - 1)]
                   + [json.loads(f.read_text().splitlines()[line - 1])])
        with pytest.raises(DataError, match=rf"strict{line}\.jsonl:{line}: field '{field}'"):
            read_pairs(g)


def test_jsonl_round_trip(tmp_path):
    pairs = [Pair(id="x", prompt=[{"role": "user", "content": "hi"}], chosen="a", rejected="b", tie=True, meta={"k": 1})]
    write_pairs(tmp_path / "p.jsonl", pairs)
    assert load_jsonl(tmp_path / "p.jsonl").pairs == pairs


def test_hh_bad_rows(tmp_path):
    good = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}
    f = _jsonl(tmp_path / "hh.jsonl", [good, {**good, "rejected": 7}])
    with pytest.raises(DataError, match=r"hh\.jsonl:2: field 'rejected': expected a string, got int"):
        load_hh_rlhf(f)
    f = _jsonl(tmp_path / "hh.jsonl", [good, {"chosen": "no turns here", "rejected": "x"}])
    with pytest.raises(DataError, match=r"hh\.jsonl:2: field 'chosen'"):
        load_hh_rlhf(f)
    f = _jsonl(tmp_path / "hh.jsonl", [good, {**good, "rejected": "\n\nHuman: other\n\nAssistant: x"},
                                       {**good, "rejected": good["chosen"] + "  "}])
    loaded = load_hh_rlhf(f)
    assert loaded.skipped == {"no_shared_prefix": 1, "identical_responses": 1}
    assert loaded.pairs[0].prompt == [{"role": "user", "content": "hi"}] and loaded.pairs[0].id == "hh-rlhf/hh/0"


def _pandalm_row(idx, **kw):
    return {"idx": idx, "instruction": "Say hi", "input": "", "response1": "hi", "response2": "bye",
            "annotator1": 1, "annotator2": 1, "annotator3": 2, **kw}


def test_pandalm_bad_rows(tmp_path):
    f = tmp_path / "panda.json"
    f.write_text(json.dumps([_pandalm_row(0), _pandalm_row(1, annotator2=3)]))
    with pytest.raises(DataError, match=r"panda\.json\[1\]: field 'annotator2'"):
        load_pandalm(f)
    f.write_text(json.dumps([_pandalm_row(0), _pandalm_row(1, response2=None)]))
    with pytest.raises(DataError, match=r"panda\.json\[1\]: field 'response2': missing"):
        load_pandalm(f)
    f.write_text(json.dumps([_pandalm_row(0), _pandalm_row(0)]))
    with pytest.raises(DataError, match=r"panda\.json\[1\]: field 'id': duplicate"):
        load_pandalm(f)
    f.write_text("[{]")
    with pytest.raises(DataError, match=r"panda\.json:1: invalid JSON"):
        load_pandalm(f)
    # a boolean response is counted and skipped; a 3-way disagreement is a tie, kept and marked
    f.write_text(json.dumps([_pandalm_row(0, response2=True), _pandalm_row(1, annotator1=0, input="ctx")]))
    loaded = load_pandalm(f)
    assert loaded.skipped == {"non_text_response": 1}
    assert loaded.pairs[0].tie and loaded.pairs[0].prompt == "Say hi\n\nctx"
    with pytest.raises(DataError, match="github.com/WeOpenML/PandaLM"):
        load_pandalm("WeOpenML/PandaLM")


def test_rewardbench_bad_rows(tmp_path):
    good = {"prompt": "Q", "chosen": "a", "rejected": "b", "chosen_model": "m1", "rejected_model": "m2", "subset": "s", "id": 1}
    for bad, field in (({**good, "chosen": False}, "chosen"), ({**good, "id": None}, "id"),
                       ({**good, "subset": None}, "subset"), ({**good, "prompt": ""}, "prompt"), (good, "id")):
        f = _jsonl(tmp_path / "rb.jsonl", [good, bad])
        with pytest.raises(DataError, match=rf"rb\.jsonl:2: field '{field}'"):
            load_rewardbench(f)


def _uf_row(sc=8.0, sr=6.0, **kw):
    user = {"role": "user", "content": "Q"}
    return {"prompt": "Q", "chosen": [user, {"role": "assistant", "content": "good"}],
            "rejected": [user, {"role": "assistant", "content": "bad"}], "score_chosen": sc, "score_rejected": sr, **kw}


def test_ultrafeedback_bad_rows(tmp_path):
    user = {"role": "user", "content": "Q"}
    for bad, field in ((_uf_row(sc="8"), "score_chosen"), (_uf_row(sr=float("nan")), "score_rejected"),
                       (_uf_row(sc=2.0), "score_chosen"), (_uf_row(chosen=[user, user]), "chosen[1]"),
                       (_uf_row(rejected=[{"role": "user", "content": "other"}, {"role": "assistant", "content": "x"}]), "rejected"),
                       (_uf_row(chosen="good"), "chosen")):
        f = _jsonl(tmp_path / "uf.jsonl", [_uf_row(), bad])
        with pytest.raises(DataError, match=rf"uf\.jsonl:2: field '{re.escape(field)}'"):
            load_ultrafeedback(f)
    f = _jsonl(tmp_path / "uf.jsonl", [_uf_row(8, 7.5), _uf_row(8, 5), _uf_row(9, 2), _uf_row(6, 6)])
    loaded = load_ultrafeedback(f)
    assert [p.rating for p in loaded.pairs] == ["slightly better", "better", "significantly better"]
    assert [p.margin for p in loaded.pairs] == [0.5, 3.0, 7.0] and loaded.skipped == {"tie": 1}


def test_alpacaeval_bad_rows(tmp_path):
    good = {"instruction": "Q", "output_1": "a", "output_2": "b", "generator_1": "g1", "generator_2": "g2", "preference": 1.1}
    for bad, field in (({**good, "preference": 2.5}, "preference"), ({**good, "preference": "1.2"}, "preference"),
                       ({k: v for k, v in good.items() if k != "preference"}, "preference"),
                       ({**good, "output_1": True}, "output_1"), ({**good, "instruction": " "}, "prompt")):
        f = _jsonl(tmp_path / "ae.jsonl", [good, bad])
        with pytest.raises(DataError, match=rf"ae\.jsonl:2: field '{field}'"):
            load_alpacaeval(f)
    f = _jsonl(tmp_path / "ae.jsonl", [good, {**good, "preference": 1.5}, {**good, "preference": None},
                                       {**good, "preference": 1.8}, {**good, "preference": 2.0}])
    loaded = load_alpacaeval(f)
    assert loaded.skipped == {"tie": 1, "no_preference": 1}
    a, b, c = loaded.pairs
    assert (a.chosen, a.rating, a.meta["chosen_model"]) == ("a", "better", "g1")
    assert (b.chosen, b.rating, b.meta["chosen_model"]) == ("b", "better", "g2")
    assert (c.margin, c.rating) == (1.0, "significantly better")
    assert a.margin == pytest.approx(0.8)


def test_load_spec_errors(tmp_path):
    with pytest.raises(DataError, match="unknown format 'csv'.*hh-rlhf, pandalm, rewardbench, ultrafeedback, alpacaeval, jsonl"):
        load({"format": "csv", "path": "x.csv"})
    with pytest.raises(DataError, match="'tie_policy': not an option of format 'rewardbench'"):
        load({"format": "rewardbench", "path": "x.jsonl", "tie_policy": "drop"})
    with pytest.raises(DataError, match="format 'pandalm' needs a path"):
        load({"format": "pandalm"})
    with pytest.raises(DataError, match="field 'limit': must be a positive integer, got -1"):
        load({"format": "jsonl", "path": "x.jsonl", "limit": -1})
    with pytest.raises(DataError, match="field 'per_stratum': must be a positive integer, got True"):
        load({"format": "jsonl", "path": "x.jsonl", "per_stratum": True})
    with pytest.raises(DataError, match="field 'path': empty path"):
        load("jsonl:")


def test_parse_spec_reads_nothing_and_names_the_path():
    s = parse_spec({"format": "hh-rlhf", "split": "train", "limit": 5, "seed": 3, "stratify": None})
    assert (s.format, s.kwargs, s.limit, s.seed, s.stratify) == ("hh-rlhf", {"split": "train"}, 5, 3, None)
    assert s.path == "Anthropic/hh-rlhf"  # the loader's default: a hub name
    s = parse_spec("jsonl:/nowhere/x.jsonl")  # no file is opened
    assert s.path == "/nowhere/x.jsonl" and s.kwargs == {"path": "/nowhere/x.jsonl"}
    # a bare path is critcore JSONL, and a path may hold ':'
    for spec in ("/nowhere/a:b.jsonl", "jsonl:/nowhere/a:b.jsonl"):
        assert (parse_spec(spec).format, parse_spec(spec).path) == ("jsonl", "/nowhere/a:b.jsonl")
    assert parse_spec("rewardbench").path == "allenai/reward-bench"
    g = parse_spec({"format": "generated", "n": 4, "split": "test"})
    assert g.path is None and g.kwargs == {"n": 4, "split": "test", "seed": 0}  # the seed makes the data too
    with pytest.raises(DataError, match="takes no path"):
        parse_spec({"format": "generated", "path": "x"})
    # a JSON mapping in a string (as a command-line flag gives it) is that mapping
    j = parse_spec(' {"format": "pandalm", "path": "/nowhere/p.json", "limit": 7}')
    assert (j.format, j.path, j.limit) == ("pandalm", "/nowhere/p.json", 7)
    with pytest.raises(DataError, match="not a valid JSON mapping"):
        parse_spec('{"format": "pandalm",')
    with pytest.raises(DataError, match="must be a positive integer, got 0"):
        parse_spec('{"format": "jsonl", "path": "x.jsonl", "limit": 0}')


def test_loaders_only_read(tmp_path):
    f = _jsonl(tmp_path / "pairs.jsonl", [GOOD])
    before = sorted(tmp_path.iterdir())
    load_jsonl(f)
    assert sorted(tmp_path.iterdir()) == before


def test_hub_import_is_lazy():
    code = "import sys, critcore.data; print('datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- sampling -----------------------------------------------------------------------------------

def _pairs(sizes):
    return [Pair(id=f"{s}/{i}", prompt="q", chosen="a", rejected="b", subset=s)
            for s, n in sizes.items() for i in range(n)]


def test_sample_deterministic_and_stratified():
    pairs = _pairs({"x": 60, "y": 30, "z": 10})
    a = sample(pairs, 20, seed=1)
    assert [p.id for p in a] == [p.id for p in sample(pairs, 20, seed=1)]
    assert [p.id for p in a] != [p.id for p in sample(pairs, 20, seed=2)]
    assert Counter(p.subset for p in a) == {"x": 12, "y": 6, "z": 2}
    assert a == sorted(a, key=pairs.index)  # input order kept
    assert len(sample(pairs, 7, seed=0)) == 7  # largest remainder fills the total
    assert len(sample(pairs, 20, seed=0, stratify=None)) == 20
    assert sample(pairs, 500) == pairs
    floor = sample(pairs, 20, seed=1, per_stratum=5)  # at least 5 per stratum
    assert Counter(p.subset for p in floor) == {"x": 12, "y": 6, "z": 5}
    each = sample(pairs, None, per_stratum=15)
    assert Counter(p.subset for p in each) == {"x": 15, "y": 15, "z": 10}
    by_key = sample(pairs, None, per_stratum=1, stratify=lambda p: p.subset == "x")
    assert len(by_key) == 2


def test_nested_subsets():
    pairs = _pairs({"x": 50})
    subsets = nested_subsets(pairs, [5, 20, 50], seed=7)
    assert subsets[20][:5] == subsets[5] and subsets[50][:20] == subsets[20]
    assert sorted(p.id for p in subsets[50]) == sorted(p.id for p in pairs)
    assert nested_subsets(pairs, [20], seed=7)[20] == subsets[20]
    with pytest.raises(ValueError):
        nested_subsets(pairs, [51])
