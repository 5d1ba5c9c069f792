"""Critics, cache keys, augment, the train/test critic check and the CLI, on real data."""
from __future__ import annotations

import dataclasses
import json
import random
import re
import sqlite3
import time

import pytest

from critcore.llm import CritiqueCache, make_key
from critcore.critique import (CriticMismatchError, LocalCritic, OpenAICritic, SimulatedCritic, augment,
                               check_same_critic, make_critic)
from critcore.llm import load_template, render
from critcore.data import prompt_text, read_pairs, write_pairs
from critcore.errors import ModelNotFoundError, UserError

from critic_servers import MIX_VALIDATION, SHARED_DATA, modest_threads, short_real_pairs

needs_data = pytest.mark.skipif(not MIX_VALIDATION.exists(), reason=f"shared data not found at {SHARED_DATA}")
ECHO = "Please provide a critique"


@pytest.fixture(scope="module")
def val_pairs():
    if not MIX_VALIDATION.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return read_pairs(MIX_VALIDATION)


# ---------------------------------------------------------------- templates


def test_paper_template_is_default_and_renders_once():
    t = load_template()
    assert t.startswith("User: {prompt}\nChatbot: {response}")
    assert "(2) Correctness. A good response should be honest and factually correct." in t
    # braces in the texts are not placeholders; over-long prompts keep their end
    text = render(t, "say {response} " + "x" * 50 + "END", "a {prompt} b", max_chars=20)
    assert "a {prompt} b" in text and "xEND" in text and "say {response}" not in text


def test_user_template_file(tmp_path):
    f = tmp_path / "mine.txt"
    f.write_text("Q: {prompt}\nA: {response}\nCritique it.")
    assert load_template(str(f)).startswith("Q: {prompt}")
    (tmp_path / "bad.txt").write_text("no placeholders")
    with pytest.raises(ValueError, match="must contain"):
        load_template(str(tmp_path / "bad.txt"))
    with pytest.raises(UserError, match="paper"):
        load_template("no-such-template")


# ---------------------------------------------------------------- cache keys


def test_cache_key_changes_with_template_and_params_only():
    a = LocalCritic("smollm2", max_new_tokens=48)  # the model loads lazily: nothing loads here
    same = LocalCritic("smollm2", max_new_tokens=48)
    other_t = LocalCritic("smollm2", max_new_tokens=48, template="Q: {prompt} A: {response} Critique:")
    other_p = LocalCritic("smollm2", max_new_tokens=64)
    k = a.key("prompt", "response")
    assert k == same.key("prompt", "response")
    assert len({k, other_t.key("prompt", "response"), other_p.key("prompt", "response")}) == 3
    assert k != a.key("prompt", "response!")
    assert make_key("c", "t", {"a": 1, "b": 2}, "p", "r") == make_key("c", "t", {"b": 2, "a": 1}, "p", "r")


def _open_cache(path, barrier, results):
    barrier.wait()
    try:
        CritiqueCache(path)
        results.put("ok")
    except Exception as e:  # noqa: BLE001 - the parent reports it
        results.put(str(e))


def test_processes_that_open_a_new_cache_at_once_all_get_it(tmp_path):
    """Launched processes open one new cache file at the same moment. SQLite told one of them
    "database is locked" at once, without waiting, and the run ended (4 of 10 trials of 6
    processes, and a slow distributed test in `make test-slow`): now every opener gets the file."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    for trial in range(6):
        barrier, results = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_open_cache, args=(str(tmp_path / f"{trial}.sqlite"), barrier, results))
                 for _ in range(6)]
        for proc in procs:
            proc.start()
        got = [results.get(timeout=600) for _ in procs]
        for proc in procs:
            proc.join()
        assert got == ["ok"] * 6, (trial, got)


def test_cache_hits_regardless_of_order_and_misses_on_change(tmp_path, val_pairs):
    db = tmp_path / "c.sqlite"
    pairs = val_pairs[:30]  # real data: some AlpacaEval responses recur across pairs
    n = len(_unique_items(pairs))
    assert 40 < n < 60
    with CritiqueCache(db) as cache:
        first = augment(pairs, "simulated:0.7", cache=cache, progress=False)
        assert cache.stats["misses"] == n and cache.stats["hits"] == 0 and cache.stats["duplicates"] == 60 - n
    shuffled = random.Random(1).sample(pairs, len(pairs))
    with CritiqueCache(db) as cache:  # reopened: persistent
        again = augment(shuffled, "simulated:0.7", cache=cache, progress=False)
        assert cache.stats["hits"] == n and cache.stats["misses"] == 0 and cache.stats["generated"] == 0
    by_id = {p.id: p for p in again}
    assert all(by_id[p.id].chosen_critique == p.chosen_critique for p in first)
    with CritiqueCache(db) as cache:
        augment(pairs, SimulatedCritic(0.7, template="Q: {prompt} A: {response}"), cache=cache, progress=False)
        assert cache.stats["hits"] == 0 and cache.stats["misses"] == n  # template change
        augment(pairs, "simulated:0.7,seed=1", cache=cache, progress=False)
        assert cache.stats["hits"] == 0 and len(cache) == 3 * n  # identity change


def _unique_items(pairs):
    return {(prompt_text(p.prompt), r, lab) for p in pairs for r, lab in ((p.chosen, 1), (p.rejected, 0))}


def test_identical_items_generated_once(val_pairs):
    p = val_pairs[0]
    dup = [p, dataclasses.replace(p, id="copy")]  # same prompt and completions
    cache = CritiqueCache()
    out = augment(dup, "simulated:0.5", cache=cache, progress=False)
    assert cache.stats["generated"] == 2 and cache.stats["duplicates"] == 2
    assert out[0].chosen_critique == out[1].chosen_critique


# ---------------------------------------------------------------- simulated critic


def test_simulated_accuracy_and_determinism(val_pairs):
    items = [(prompt_text(p.prompt), r) for p in val_pairs for r in (p.chosen, p.rejected)]
    labels = [True, False] * len(val_pairs)
    for p in (0.0, 0.7, 1.0):
        c = SimulatedCritic(p)
        good = [t.startswith(("The response answers", "The response addresses", "The response is helpful",
                              "The response follows")) for t in c.generate(items, labels)]
        correct = sum(g == lab for g, lab in zip(good, labels)) / len(items)
        assert abs(correct - p) < 0.06, (p, correct)
    c = SimulatedCritic(0.7, seed=0)
    assert c.identity == "simulated(p=0.7,seed=0)" and "simulated" in repr(c)
    out = c.generate(items, labels)
    order = random.Random(0).sample(range(len(items)), len(items))
    shuffled = c.generate([items[i] for i in order], [labels[i] for i in order])
    assert [out[i] for i in order] == shuffled  # per item, not per call order
    assert out != SimulatedCritic(0.7, seed=1).generate(items, labels)
    assert len(set(out)) >= 4  # several phrasings
    with pytest.raises(ValueError, match="label"):
        c.generate(items[:2])


# ---------------------------------------------------------------- augment and the critic check


def test_augment_fills_critiques_and_roundtrips(tmp_path, val_pairs):
    pairs = val_pairs[:10]
    out = augment(pairs, "simulated:0.8", progress=False)
    assert [p.id for p in out] == [p.id for p in pairs]
    assert all(p.chosen_critique is None for p in pairs)  # inputs untouched
    assert all(p.has_critiques and p.meta["critic"] == "simulated(p=0.8,seed=0)" for p in out)
    write_pairs(tmp_path / "a.jsonl", out)
    back = read_pairs(tmp_path / "a.jsonl")
    assert back == out
    assert check_same_critic(back, out) == "simulated(p=0.8,seed=0)"
    cleared = augment(out, "none", progress=False)
    assert not any(p.has_critiques for p in cleared) and cleared[0].meta["critic"] == "none"


def test_check_same_critic_refuses_mismatches(val_pairs):
    train, test = val_pairs[:20], val_pairs[20:30]
    a = augment(train, "simulated:0.7", progress=False)
    assert check_same_critic(train, test) is None
    with pytest.raises(CriticMismatchError, match="train has critic 'simulated.*test has no critiques"):
        check_same_critic(a, test)
    with pytest.raises(CriticMismatchError, match="same critic"):
        check_same_critic(a, augment(test, "simulated:0.9", progress=False))
    with pytest.raises(CriticMismatchError, match="same critic"):  # same model, other template
        check_same_critic(a, augment(test, SimulatedCritic(0.7, template="{prompt}|{response}"), progress=False))
    with pytest.raises(CriticMismatchError, match="only 20 of 21"):
        check_same_critic(a + [train[0]], a)
    with pytest.raises(CriticMismatchError, match="mixes critics"):
        check_same_critic(a + augment(test, "simulated:0.9", progress=False), a)


def test_scoring_refuses_pairs_not_critiqued_as_the_rm_was_trained_in_python_too(rm_minilm):
    """critcore.evaluate scored a critique RM on pairs without its critiques (and a No-Critiques RM
    on critiqued ones) with no word: other margins than the recipe gives. The rule the CLI
    applied now holds wherever an RM scores, with the same explicit opt-out (test fails on the
    old code)."""
    import copy

    from critcore.evaluate import evaluate, score_one, score_pairs
    from critcore.generated import generated_pairs

    pairs = generated_pairs(6, split="test")
    critiqued = augment(pairs, "simulated:0.9", progress=False)
    rm = copy.copy(rm_minilm)  # the same weights, with a recipe of its own
    rm.recipe = {"max_length": 64, "with_critiques": True,
                 "critic": {"identity": "simulated(p=0.9,seed=0)", "config": critiqued[0].meta["critic_config"]}}
    as_trained = score_pairs(rm, critiqued)
    with pytest.raises(CriticMismatchError, match=r"trained with critiques by 'simulated\(p=0.9,seed=0\)'.*but the "
                                                  r"pairs carry no critiques.*allow_critic_mismatch=True"):
        score_pairs(rm, pairs)
    with pytest.raises(CriticMismatchError, match="pairs carry critiques by 'simulated"):
        evaluate(rm, {"other": augment(pairs, "simulated:0.5", progress=False)})
    with pytest.raises(CriticMismatchError, match="scored without a critique"):
        score_one(rm, "What is 2+2?", "4")
    mismatched = score_pairs(rm, pairs, allow_critic_mismatch=True)  # the explicit opt-out
    assert (mismatched["margin"] != as_trained["margin"]).any()  # what the rule prevents: other numbers
    rm.recipe = {**rm.recipe, "critic": None}
    with pytest.raises(CriticMismatchError, match="trained without critiques, but the pairs carry critiques"):
        score_pairs(rm, critiqued)
    with pytest.raises(CriticMismatchError, match="scored with a critique"):
        score_one(rm, "What is 2+2?", "4", critique="Correct.")
    assert len(score_pairs(rm, critiqued, with_critiques=False)) == 6  # critiques left unread: as trained
    rm.recipe = None  # a checkpoint without a recipe: nothing to hold it to
    assert len(score_pairs(rm, pairs)) == len(score_pairs(rm, critiqued)) == 6


@pytest.fixture
def toy_backend():
    """tests/toy_critic.py registered for one test, and for it alone."""
    import importlib
    import sys

    from critcore.critics import BACKENDS

    yield importlib.import_module("toy_critic")
    BACKENDS.pop("toy", None)
    sys.modules.pop("toy_critic", None)


@pytest.mark.filterwarnings("ignore::critcore.train.TrainingWarning")  # one optimizer step is all this needs
def test_a_new_critic_backend_is_one_module_and_one_line(toy_backend, tmp_path, capsys):
    """tests/toy_critic.py adds a backend as CONTRIBUTING.md says: one module (its options model
    and its class) and one line that imports it. Nothing else in critcore changes, and specs,
    option checks, the cache, configurations, dry runs, training, the recipe and scoring take it."""
    from critcore import config, studies
    from critcore.cli import main
    from critcore.generated import generated_pairs

    critic = make_critic({"backend": "toy", "word": "ok"}, {"max_new_tokens": 8, "template": None})
    assert isinstance(critic, toy_backend.ToyCritic) and critic.identity == "toy:ok"  # options it has not: left out
    with pytest.raises(UserError, match="critic toy: repeat must be at least 1"):
        make_critic({"backend": "toy", "repeat": 0})
    with pytest.raises(UserError, match="critic toy: unknown key 'wrd'; did you mean 'word'"):
        make_critic({"backend": "toy", "wrd": "x"})
    pairs = generated_pairs(8, split="train")
    with CritiqueCache(tmp_path / "c.sqlite") as cache:
        assert augment(pairs, critic, cache, progress=False)[0].chosen_critique.startswith("ok: ")
        augment(pairs, critic, cache, progress=False)
        assert cache.stats["generated"] == 16 and cache.stats["hits"] == 16
    cfg = config.resolve(config.SCHEMAS["rq1"], {
        "critics": {"none": "none", "toy": {"backend": "toy", "repeat": 2}}, "sections": "generated",
        "train_data": {"format": "generated", "n": 8}, "eval_data": {"g": {"format": "generated", "n": 4, "split": "test"}}})
    report = studies.validate(cfg, check_data=False)
    assert report.ok and any(c.startswith("critic toy: toy:fine (config ") for c in report.checks)
    common = ["--max-length", "32", "--set", "train.batch_size=8", "--cache", str(tmp_path / "c.sqlite"), "--quiet"]
    assert main(["train", "--train", json.dumps({"format": "generated", "n": 8}), "--critic",
                 json.dumps({"backend": "toy", "word": "ok"}), "--out", str(tmp_path / "run"), *common]) == 0
    model = tmp_path / "run" / "train" / "model"
    assert json.loads((model / "critcore_recipe.json").read_text())["critic"]["spec"]["backend"] == "toy"
    capsys.readouterr()
    assert main(["score", "--model", str(model), "--prompt", "What is 2+2?", "--response", "It is 4", *common[4:]]) == 0
    scored = json.loads(capsys.readouterr().out)  # the recipe's spec rebuilt the toy critic, which critiqued
    assert scored["critique"] == "ok: It is 4" and scored["critic"] == "toy:ok"


def test_make_critic_specs(monkeypatch):
    assert make_critic("none") is None and make_critic(None) is None
    s = make_critic("simulated:0.7,seed=3")
    assert isinstance(s, SimulatedCritic) and s.identity == "simulated(p=0.7,seed=3)"
    assert make_critic("smollm2").identity == "local:smollm2"
    assert make_critic("gemma3-270m", max_new_tokens=8).params["max_new_tokens"] == 8
    assert make_critic("smollm2", {"max_new_tokens": 9, "batch_size": None}).params["max_new_tokens"] == 9  # options
    assert make_critic({"backend": "local", "model": "smollm2", "max_new_tokens": 7},
                       {"max_new_tokens": 9}).params["max_new_tokens"] == 7  # the spec wins over options
    started = time.monotonic()
    with pytest.raises(ModelNotFoundError, match="smolm2.*smollm2, .*hub name"):  # a typo fails fast, no traceback
        make_critic("smolm2")
    assert time.monotonic() - started < 60  # no model is loaded: generous for a loaded machine
    monkeypatch.setenv("CRITCORE_TEST_KEY", "sk-secret-123")
    o = make_critic(json.dumps({"backend": "openai", "base_url": "http://h:1/v1", "model": "m",
                                "api_key_env": "CRITCORE_TEST_KEY", "max_concurrency": 8}))
    assert isinstance(o, OpenAICritic) and o.url == "http://h:1/v1/chat/completions" and o.identity == "openai:m"
    assert "sk-secret-123" not in repr(o) + o.identity + json.dumps(o.params)
    with pytest.raises(ValueError, match="critic magic: unknown backend 'magic'; expected one of 'local', 'openai'"):
        make_critic({"backend": "magic"})
    with pytest.raises(ValueError, match="unknown key 'max_new_token'; did you mean 'max_new_tokens'"):
        make_critic({"backend": "local", "model": "smollm2", "max_new_token": 3})


@pytest.mark.parametrize("spec, needle", [
    ({"backend": "openai", "base_url": "http://h:1/v1"}, "critic openai: 'model' is missing"),
    ({"backend": "openai", "base_url": "http://h:1/v1", "model": "m", "max_concurrency": 0}, "max_concurrency must be at least 1 or null, got 0"),
    ({"backend": "openai", "base_url": "http://h:1/v1", "model": "m", "max_concurrency": "x"}, "'max_concurrency': input should be a valid integer"),
    ({"backend": "openai", "base_url": "http://h:1/v1", "model": "m", "timeout": -1}, "timeout must be at least 0.001"),
    ({"backend": "openai", "base_url": "http://h:1/v1", "model": "m", "max_retries": True}, "'max_retries': expected a number, got a boolean"),
    ({"backend": "local", "model": "smollm2", "max_new_tokens": 0}, "max_new_tokens must be at least 1"),
    ({"backend": "local", "model": "smollm2", "batch_size": 0}, "batch_size must be at least 1"),
    ({"backend": "local", "model": "smollm2", "dtype": "float8"}, "'dtype': input should be 'float32', 'bfloat16' or 'float16' (got 'float8')"),
    ({"backend": "local", "model": "smollm2", "engine": "vllm"}, "'engine': input should be 'ctranslate2' or 'transformers' (got 'vllm')"),
    ({"backend": "local", "model": "smollm2", "engine": "ctranslate2", "compute_type": "int4"}, "'compute_type': input should be"),
    ("simulated:1.5", "critic simulated: p must be in [0, 1], got 1.5"),
])
def test_a_bad_critic_option_is_a_user_error_before_any_work(spec, needle):
    """Each of these was a ValueError, TypeError or AttributeError traceback from deep inside a
    backend (a thread pool of 0 workers, a negative socket timeout, torch.float8)."""
    with pytest.raises(UserError, match=re.escape(needle)):
        make_critic(spec)


# ---------------------------------------------------------------- CLI


def test_cli_critique_command(tmp_path, val_pairs, capsys):
    from critcore.cli import main

    data = tmp_path / "in.jsonl"
    write_pairs(data, val_pairs[:12])
    argv = ["critique", "--critic", "simulated:0.6", "--data", str(data), "--out", str(tmp_path / "out.jsonl"),
            "--cache", str(tmp_path / "c.sqlite"), "--limit", "5", "--quiet"]
    assert main(argv) == 0
    stats = json.loads(capsys.readouterr().out)
    out = read_pairs(tmp_path / "out.jsonl")
    n = len(_unique_items(out))
    assert stats["pairs"] == 5 and stats["misses"] == n and stats["records"] == n
    assert len(out) == 5 and all(p.has_critiques for p in out)
    assert main([*argv[:4], f"jsonl:{data}", *argv[5:]]) == 0  # FORMAT:PATH reads the same pairs
    assert json.loads(capsys.readouterr().out)["hit_rate"] == 1.0


# ---------------------------------------------------------------- the local SmolLM2 critic


@pytest.fixture(scope="module")
def smollm2():
    if not MIX_VALIDATION.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    with modest_threads():
        yield LocalCritic("smollm2", max_new_tokens=48, batch_size=4)


@needs_data
@pytest.mark.slow
def test_fp32_reference_is_batch_invariant_and_ctranslate2_writes_the_same(smollm2):
    """The fp32 reference: left padding does not change greedy output; CTranslate2 in float32
    writes the very same texts."""
    reference = LocalCritic("smollm2", max_new_tokens=32, batch_size=4, dtype="float32")
    items = [(prompt_text(p.prompt), p.chosen) for p in short_real_pairs(3)]
    batched = reference.generate(items)
    alone = [reference.generate([it])[0] for it in items]
    assert batched == alone
    assert reference.generate(items[::-1]) == batched[::-1]  # same again, in another order
    for text in batched:
        assert text.strip() and ECHO not in text
        assert "<|im_end|>" not in text and "<|im_start|>" not in text and not text.startswith("assistant")
    ct2 = LocalCritic("smollm2", max_new_tokens=32, batch_size=4, engine="ctranslate2")
    assert ct2.generate(items) == batched
    assert ct2.config_hash != reference.config_hash  # the engine is part of every cache key


@needs_data
def test_a_resumed_run_writes_what_an_uninterrupted_one_writes(tmp_path, smollm2):
    """The default critic (bf16 on this CPU) is not batch-invariant, but a run killed after some
    batches regenerates exactly the batches it had not committed: the same texts."""
    from critcore.critique import critique_texts

    pairs = short_real_pairs(4)
    items = [(prompt_text(p.prompt), r, None) for p in pairs for r in (p.chosen, p.rejected)]
    with CritiqueCache(tmp_path / "full.sqlite") as cache:
        full = critique_texts(smollm2, items, cache, progress=False)
    rows = sqlite3.connect(tmp_path / "full.sqlite").execute("SELECT key, critique, tokens FROM critiques "
                                                             "ORDER BY rowid LIMIT 4").fetchall()
    with CritiqueCache(tmp_path / "resumed.sqlite") as cache:
        cache.put_many(smollm2.identity, rows)  # what a run killed after its first batch had committed
        before = cache.stats["generated"]
        resumed = critique_texts(smollm2, items, cache, progress=False)
        assert cache.stats["hits"] == 4 and cache.stats["generated"] - before == len(set(items)) - 4
    assert resumed == full


@needs_data
def test_augment_with_local_critic_uses_cache(tmp_path, smollm2):
    pairs = short_real_pairs(2)
    with CritiqueCache(tmp_path / "c.sqlite") as cache:
        out = augment(pairs, smollm2, cache=cache, progress=False)
        assert cache.stats["generated"] == 4 and cache.stats["tokens_generated"] > 4
    with CritiqueCache(tmp_path / "c.sqlite") as cache:
        again = augment(pairs, smollm2, cache=cache, progress=False)
        assert cache.stats["hits"] == 4 and cache.stats["generated"] == 0
    assert again == out and all(p.meta["critic"] == "local:smollm2" for p in out)
    assert all(p.chosen_critique and ECHO not in p.chosen_critique for p in out)
    rows = sqlite3.connect(tmp_path / "c.sqlite").execute("SELECT critique FROM critiques").fetchall()
    assert sorted(r[0] for r in rows) == sorted(c for p in out for c in (p.chosen_critique, p.rejected_critique))


@pytest.mark.slow
@needs_data
def test_gemma3_base_critic():
    c = LocalCritic("gemma3-270m", max_new_tokens=16)
    (p,) = short_real_pairs(1)
    with modest_threads():
        text = c.generate([(prompt_text(p.prompt), p.chosen)])[0]
    assert isinstance(text, str) and text and ECHO not in text and "\n\n" not in text
    assert c.identity == "local:gemma3-270m"
