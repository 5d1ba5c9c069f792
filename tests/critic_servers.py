"""Test helpers: real OpenAI-compatible chat-completions servers on loopback, and real data.

`ChatServer` is a stdlib ThreadingHTTPServer on 127.0.0.1 (port 0) answering
POST /v1/chat/completions with an `engine(user_text, max_tokens) -> (content, tokens)`:
`local_engine(critic)` runs the real SmolLM2 model, `digest_engine` is an instant, deterministic
stand-in for tests whose outcome must not depend on machine speed. Faults are injected on a
seeded share of requests (FAULTS): 429, 500 with the Authorization header echoed in a long body,
a hang and a one-byte-at-a-time trickle that both outlast the client's deadline, a dropped
connection, a malformed 200 body, an empty or whitespace-only reply, and a redirect to another
host (`redirect_to`)."""
from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections import Counter
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MIX_VALIDATION = SHARED_DATA / "mix" / "validation.jsonl"


def short_real_pairs(n: int, max_chars: int = 700):
    """The first n pairs of the mix's validation split whose texts total under max_chars."""
    from critcore.data import prompt_text, read_pairs

    pairs = [p for p in read_pairs(MIX_VALIDATION)
             if len(prompt_text(p.prompt)) + len(p.chosen) + len(p.rejected) < max_chars]
    return pairs[:n]


@contextmanager
def modest_threads():
    """On a CPU already busier than its cores (a shared dev box), run torch on one thread: OpenMP
    threads that wait on each other under contention make generation many times slower."""
    import torch

    before = torch.get_num_threads()
    if os.getloadavg()[0] > (os.cpu_count() or 1):
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def local_engine(critic):
    """Serve a LocalCritic's model: one request at a time, batch 1, the client's max_tokens."""
    lock = threading.Lock()

    def engine(text: str, max_tokens: int):
        with lock:
            return critic.complete([text], max_new_tokens=max_tokens)[0]

    return engine


def digest_text(text: str) -> str:
    return f"Critique {hashlib.sha256(text.encode()).hexdigest()[:16]}: the response is adequate."


def digest_engine(text: str, max_tokens: int):
    return digest_text(text), 7


MALFORMED = (b'{"choices": [{"message": {"content": "cut', b'{"choices": []}',
             b'{"choices": [{"message": {"content": null}}]}', b"<html>bad gateway</html>")
FAULTS = ("429", "500", "hang", "trickle", "drop", "malformed", "empty", "redirect")


class ChatServer:
    """Use as a context manager; `url` is the base URL ("http://127.0.0.1:PORT/v1").

    faults: per-block counts, e.g. {"429": 1, "500": 1, "hang": 1, "malformed": 2} with
    block=10 puts exactly those faults, in a seeded order, into every 10 requests.
    always: answer every request with this HTTP status (echoing the Authorization header in the
    body, as a careless server might), after the first `always_after` good answers. delay:
    seconds each good answer takes."""

    def __init__(self, engine, *, faults=None, block=10, seed=0, hang=2.0, delay=0.0, always=None, redirect_to=None,
                 hold=None, refuse=None, always_after=0):
        self.engine, self.hang, self.delay, self.always, self.always_after = engine, hang, delay, always, always_after
        self.redirect_to = redirect_to  # where "redirect" faults point (another server's URL)
        self.hold = hold  # (text fragment, threading.Event): a request whose text holds it waits for the event
        self.refuse = refuse  # a text fragment: requests holding it get a permanent 400 ("context too long")
        self.rng, self.lock = random.Random(seed), threading.Lock()
        self.block = [k for k, n in (faults or {}).items() for _ in range(n)]
        self.block += ["ok"] * (block - len(self.block)) if faults else []
        self.schedule: list[str] = []
        self.counts = Counter()  # requests, ok and each fault kind
        self.served: dict[str, str] = {}  # user text -> content of each good answer
        self.auth_headers: list[str] = []
        self.in_flight = self.max_in_flight = 0  # concurrent requests, now and at most
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                with server.lock:
                    self.in_flight = True
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    server._handle(self)
                finally:
                    server._answered(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def _next_mode(self) -> str:
        with self.lock:
            self.counts["requests"] += 1
            if not self.block:
                return "ok"
            if not self.schedule:
                self.schedule = self.rng.sample(self.block, len(self.block))
            return self.schedule.pop()

    def _answered(self, h) -> None:
        """The request leaves the in-flight count, once, before its answer's first byte is written:
        a client holding the answer may send its next request before this thread runs again."""
        with self.lock:
            if h.in_flight:
                h.in_flight = False
                self.in_flight -= 1

    def _send(self, h, status: int, body: bytes, headers=()):
        self._answered(h)
        h.send_response(status)
        for k, v in (("Content-Type", "application/json"), *headers):
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _handle(self, h):
        length = int(h.headers.get("Content-Length", 0))
        req = json.loads(h.rfile.read(length))
        auth = h.headers.get("Authorization", "")
        with self.lock:
            self.auth_headers.append(auth)
        if h.path != "/v1/chat/completions":
            return self._send(h, 404, b'{"error": "not found"}')
        if self.always and self.counts["ok"] >= self.always_after:
            with self.lock:
                self.counts["requests"] += 1
            return self._send(h, self.always, json.dumps({"error": f"refused; you sent {auth}"}).encode())
        text = req["messages"][-1]["content"]
        if self.refuse and self.refuse in text:
            with self.lock:
                self.counts["refused"] += 1
            return self._send(h, 400, json.dumps({"error": "prompt exceeds the context window; you sent "
                                                           + auth + " " + "x" * 400}).encode())
        if self.hold and self.hold[0] in text:
            self.hold[1].wait(60)
        mode = self._next_mode()
        with self.lock:
            self.counts[mode] += 1
        try:
            if mode == "429":
                return self._send(h, 429, b'{"error": "rate limited"}', [("Retry-After", "0")])
            if mode == "500":  # a long error body that echoes the key near its end
                return self._send(h, 500, json.dumps({"error": "internal " + "y" * 280 + " " + auth}).encode())
            if mode == "hang":
                time.sleep(self.hang)  # the client has timed out by now
                return self._send(h, 503, b'{"error": "late"}')
            if mode == "trickle":  # headers at once, then one byte every 0.3 s: longer than any deadline
                body = json.dumps({"choices": [{"message": {"content": "slow"}}]}).encode() + b" " * 1000
                h.send_response(200)
                h.send_header("Content-Type", "application/json")
                h.send_header("Content-Length", str(len(body)))
                h.end_headers()
                for byte in body:
                    h.wfile.write(bytes([byte]))
                    h.wfile.flush()
                    time.sleep(0.3)
                return None
            if mode == "drop":
                h.close_connection = True
                h.connection.shutdown(2)
                return None
            if mode == "malformed":
                return self._send(h, 200, MALFORMED[self.counts["malformed"] % len(MALFORMED)])
            if mode == "empty":
                content = ("", "   \n ")[self.counts["empty"] % 2]
                return self._send(h, 200, json.dumps({"choices": [{"message": {"content": content}}]}).encode())
            if mode == "redirect":
                return self._send(h, 307, b"", [("Location", (self.redirect_to or "http://127.0.0.1:9/v1")
                                                  + "/chat/completions")])
            content, tokens = self.engine(text, int(req.get("max_tokens") or 64))
            time.sleep(self.delay)
            with self.lock:
                self.served[text] = content
            body = {"id": "chatcmpl-test", "object": "chat.completion", "model": req.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"completion_tokens": tokens}}
            return self._send(h, 200, json.dumps(body).encode())
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the client gave up on this request

    def __enter__(self) -> "ChatServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
