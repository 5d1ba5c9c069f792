"""The HTTP critic's API key: checked when the critic is built, stripped of surrounding
whitespace, never shown in any form; and what ends a run at once: a refused key, an unreachable
or silent endpoint. Real loopback servers (tests/critic_servers.py), real subprocesses."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

from critcore.critique import make_critic
from critcore.data import read_pairs, write_pairs
from critcore.errors import UserError
from critcore.llm import EndpointError, mask

from critic_servers import MIX_VALIDATION, SHARED_DATA, ChatServer, digest_engine

ROOT = Path(__file__).resolve().parents[1]
ENV = "CRITCORE_TEST_LEAKY_KEY"
# each key carries two cores of its own: neither may appear anywhere, in any encoding
KEYS = {
    "newline": "sk-leak-1a2b3c4d5e6f-7a8b9c0d1e2f\n",  # a Kubernetes secret made --from-file
    "cr": "sk-leak-2b3c4d5e6f7a-8b9c0d1e2f3a\r",  # a CRLF .env file
    "space": "sk-leak-3c4d5e6f7a8b-9c0d1e2f3a4b ",
    "quote": "sk-leak-4d5e6f7a8b9c\u20190d1e2f3a4b5c",  # a pasted typographic quote: refused when built
}


def encodings(key: str) -> set[str]:
    """The key as is and stripped, escaped and encoded every way an error text or a file might hold it."""
    out = set()
    for k in {key, key.strip()}:
        out |= {k, repr(k)[1:-1], json.dumps(k)[1:-1], json.dumps(k, ensure_ascii=False)[1:-1],
                repr(k.encode())[2:-1], urllib.parse.quote(k), urllib.parse.quote_plus(k)}
    return out


def forms(key: str) -> list[str]:
    """encodings() and the key's two cores, which no escaping of what surrounds them changes."""
    core = key.strip().removeprefix("sk-leak-").replace("\u2019", "-")
    return sorted(encodings(key) | set(core.split("-")))


def leaks(key: str, *texts: str | bytes) -> list[str]:
    found = []
    for form in forms(key):
        for text in texts:
            if (form.encode() if isinstance(text, bytes) else form) in text:
                found.append(form)
    return found


def files_under(*folders: Path) -> list[Path]:
    return [p for d in folders for p in sorted(d.rglob("*")) if p.is_file()]


# ---------------------------------------------------------------- the key when the critic is built


def spec(url="http://127.0.0.1:9/v1"):
    return {"backend": "openai", "base_url": url, "model": "m", "api_key_env": ENV}


@pytest.mark.parametrize("value, problem", [
    ("sk-abcd\nefgh", "has a line break inside it"),
    ("sk-abcd efgh", "has a space or tab inside it"),
    ("sk-abcd\x07efgh", "contains a control character"),
    ("sk-abcd\u2019efgh", "contains a non-ASCII character"),
    ("sk-abcd\u00e9fgh", "contains a non-ASCII character"),  # Latin-1, but no API key has it
    (" \r\n", "is empty"),
])
def test_an_unusable_key_is_refused_when_the_critic_is_built(monkeypatch, value, problem):
    monkeypatch.setenv(ENV, value)
    with pytest.raises(UserError) as e:
        make_critic(spec())
    text = str(e.value)
    assert text.startswith(f"environment variable {ENV} (api_key_env): the key {problem}") and "\n" not in text
    assert "abcd" not in text and "efgh" not in text


def test_whitespace_around_the_key_is_stripped_and_an_unset_key_waits_for_a_request(monkeypatch):
    """A key read from a file keeps its line end; the header carries the key without it. An
    unset variable is fine until a request is needed (cached critiques, a dry run)."""
    with ChatServer(digest_engine) as server:
        for value in ("sk-abcdefgh\n", "sk-abcdefgh\r\n", "  sk-abcdefgh \t"):
            monkeypatch.setenv(ENV, value)
            make_critic(spec(server.url)).generate([("p", "r")])
        assert server.auth_headers == ["Bearer sk-abcdefgh"] * 3
    monkeypatch.delenv(ENV)
    critic = make_critic(spec())
    with pytest.raises(UserError, match=f"{ENV} \\(api_key_env\\) is not set"):
        critic.generate([("p", "r")])


def test_mask_hides_every_form_of_a_key():
    for key in KEYS.values():
        text = " | ".join(sorted(encodings(key)))
        text += f" | headers={ {'Authorization': 'Bearer ' + key}!r} | {json.dumps({'k': key})} | {key.encode()!r}"
        masked = mask(text, [key])
        assert not leaks(key, masked), (key, masked)
        assert "***" in masked and "headers=" in masked
    assert mask("sk-abc and abc", ["abc"]) == "sk-abc and abc"  # too short to mask safely


# ---------------------------------------------------------------- a key never leaks, end to end


def _critique(tmp_path: Path, name: str, url: str, key: str, extra=()) -> subprocess.CompletedProcess:
    critic = json.dumps({"backend": "openai", "base_url": url, "model": "digest", "api_key_env": ENV,
                         "max_concurrency": 3, "backoff": 0.01})
    return subprocess.run([sys.executable, "-m", "critcore.cli", "critique", "--critic", critic,
                           "--data", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / f"{name}.jsonl"),
                           "--cache", str(tmp_path / "c.sqlite"), "--quiet", *extra],
                          cwd=ROOT, env={**os.environ, ENV: key}, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not MIX_VALIDATION.exists(), reason=f"shared data not found at {SHARED_DATA}")
@pytest.mark.parametrize("name", ["newline", "quote"])
def test_a_key_never_leaks_from_critique(tmp_path, name):
    """`critcore critique` with each key against servers that echo the Authorization header
    they got: in the reason of a refused item (--on-error skip, named in the summary), and in
    a 401. stdout, stderr, the output and the cache hold the key in no form."""
    _check_critique(tmp_path, name)


@pytest.mark.slow
@pytest.mark.skipif(not MIX_VALIDATION.exists(), reason=f"shared data not found at {SHARED_DATA}")
@pytest.mark.parametrize("name", ["cr", "space"])
def test_a_key_never_leaks_from_critique_slow(tmp_path, name):
    _check_critique(tmp_path, name)


def _check_critique(tmp_path: Path, name: str):
    key = KEYS[name]
    pairs = read_pairs(MIX_VALIDATION)[:6]
    write_pairs(tmp_path / "in.jsonl", pairs)
    bad = pairs[2].chosen[:40]
    with ChatServer(digest_engine, refuse=bad) as refusing, ChatServer(digest_engine, always=401) as refused:
        skip = _critique(tmp_path, "skip", refusing.url, key, ["--on-error", "skip"])
        fail = _critique(tmp_path, "fail", refused.url, key) if name != "quote" else skip
    streams = [skip.stdout, skip.stderr, fail.stdout, fail.stderr]
    assert not leaks(key, *streams, *(p.read_bytes() for p in files_under(tmp_path) if p.name != "in.jsonl"))
    if name == "quote":  # refused when built: one line, exit 2, nothing sent
        assert skip.returncode == 2 and skip.stdout == "" and refusing.counts["requests"] == 0
        assert skip.stderr == (f"critcore critique: error: environment variable {ENV} (api_key_env): the key "
                               "contains a non-ASCII character (e.g. a typographic quote or a non-breaking space "
                               "pasted with it), which an HTTP header cannot carry; fix the variable (its value is "
                               "not shown)\n")
        return
    assert refusing.auth_headers and set(refusing.auth_headers) == {f"Bearer {key.strip()}"}
    assert skip.returncode == 0, skip.stderr[-2000:]
    summary = json.loads(skip.stdout)
    hit = [p.id for p in pairs if bad in p.chosen or bad in p.rejected]
    assert summary["pairs_skipped"] == len(hit) and [s["id"] for s in summary["skipped"]] == hit
    assert all("HTTP 400" in s["reason"] and "Bearer ***" in s["reason"] for s in summary["skipped"])
    assert all(f"pair {i} left out (on_error: skip): chosen: openai:digest: HTTP 400" in skip.stderr for i in hit)
    assert fail.returncode == 1 and fail.stdout == "" and refused.counts["requests"] == 1
    assert fail.stderr.count("\n") == 1 and fail.stderr.startswith(
        f"critcore critique: critic failed: openai:digest: HTTP 401 from {refused.url}/chat/completions: the key in "
        f"{ENV} (api_key_env) was refused; nothing more is sent: ")


def _run_study(tmp_path: Path, url: str, key: str) -> subprocess.CompletedProcess:
    """`critcore run` on a tiny quickstart (params/quick.yaml's study) with its critic at `url`."""
    params = {"study": "quickstart", "notebook": "notebooks/quickstart.ipynb", "data": "generated", "n_train": 2,
              "n_eval": 2, "critic": {"backend": "openai", "base_url": url, "model": "digest", "api_key_env": ENV,
                                      "max_concurrency": 4},
              "train": {"max_length": 64, "batch_size": 2, "micro_batch_size": 2, "epochs": 1}, "threads": 1,
              "n_boot": 10, "critique_cache": str(tmp_path / "cache" / "c.sqlite")}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, "-m", "critcore.cli", "run", str(tmp_path / "p.yaml"), "--run-id", "r"],
                          cwd=ROOT, env={**os.environ, ENV: key, "CRITCORE_OUTPUTS": str(tmp_path / "outputs")},
                          capture_output=True, text=True, timeout=600)


def _check_run(tmp_path: Path, name: str):
    key = KEYS[name]
    with ChatServer(digest_engine, always=401) as server:  # echoes the Authorization header it got
        out = _run_study(tmp_path, server.url, key)
    files = files_under(tmp_path / "outputs", tmp_path / "cache")
    assert not leaks(key, out.stdout, out.stderr, *(p.read_bytes() for p in files))
    if name == "quote":  # refused by the run's check, before the notebook starts
        assert out.returncode == 2 and server.counts["requests"] == 0
        assert f"environment variable {ENV} (api_key_env): the key contains a non-ASCII character" in out.stderr
        return
    run = tmp_path / "outputs" / "quickstart" / "r"
    assert out.returncode == 1 and server.counts["requests"] == 1 and server.auth_headers == [f"Bearer {key.strip()}"]
    said = f"HTTP 401 from {server.url}/chat/completions: the key in {ENV} (api_key_env) was refused"
    assert f"critcore run: the notebook failed in cell 5: EndpointError: openai:digest: {said}" in out.stderr
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "failed" and said in record["error"]
    assert said in (run / "quickstart.ipynb").read_text()  # the executed notebook, with the error


@pytest.mark.skipif(not MIX_VALIDATION.exists(), reason=f"shared data not found at {SHARED_DATA}")
@pytest.mark.parametrize("name", ["newline", "quote"])
def test_a_key_never_leaks_from_a_run(tmp_path, name):
    """`critcore run` (papermill) with the key refused by a server that echoes it: stdout,
    stderr, every file of the run folder (run.json, the executed notebook) and the cache."""
    _check_run(tmp_path, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cr", "space"])
def test_a_key_never_leaks_from_a_run_slow(tmp_path, name):
    _check_run(tmp_path, name)


# ---------------------------------------------------------------- endpoints that cannot serve


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: a connection is refused


def _critic(url, **kw):
    return make_critic({"backend": "openai", "base_url": url, "model": "m", "max_concurrency": 8, **kw})


def test_connection_refused_is_named_within_seconds():
    """Refused: 3 attempts (2 short retries), then the endpoint is named, whatever max_retries
    and max_backoff say; no other item is tried."""
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    started = time.monotonic()
    with pytest.raises(EndpointError) as e:
        _critic(url, max_retries=5, backoff=30, max_backoff=30).generate([(f"p{i}", "r") for i in range(40)])
    seconds = time.monotonic() - started
    assert str(e.value) == f"endpoint unreachable: {url}/chat/completions: connection refused (3 attempts)"
    assert seconds < 30  # ~1.5 s of pauses; the old client took 77 s (generous: never a machine-speed bound)


def test_a_dns_failure_and_a_tls_error_are_named():
    with pytest.raises(EndpointError, match=r"^endpoint unreachable: http://critic\.invalid:8000/v1/chat/completions: "
                                            r"DNS lookup of critic\.invalid failed"):
        _critic("http://critic.invalid:8000/v1", max_retries=1).generate([("p", "r")])
    with ChatServer(digest_engine) as server:  # plain HTTP, spoken to in TLS
        url = server.url.replace("http://", "https://")
        with pytest.raises(EndpointError, match=rf"^endpoint unreachable: {url}/chat/completions: TLS error \("):
            _critic(url).generate([("p", "r")])


def test_a_silent_server_is_named_after_one_deadline():
    """A server that accepts connections and never answers: the first request is not retried
    (bounded by the connect timeout plus one deadline), and no other item is sent."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted, held = [], threading.Event()

    def accept():
        while not held.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)  # held open, never answered

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    try:
        with pytest.raises(EndpointError) as e:
            _critic(url, timeout=1.0, max_retries=5).generate([(f"p{i}", "r") for i in range(20)])
    finally:
        held.set()
        listener.close()
        for conn in accepted:
            conn.close()
    assert str(e.value) == (f"endpoint silent: {url}/chat/completions accepted the connection but gave no answer "
                            "within 1 s (timeout)")
    assert len(accepted) == 1
