"""An OpenAI-compatible /v1/chat/completions server (OpenAI, vLLM, llama.cpp's server, Ollama),
with the standard library's http.client, built to survive a faulty server:

- One deadline per request (`timeout`): a watchdog closes the connection when it passes, so a
  server that trickles one byte at a time cannot hold a request open.
- `max_concurrency` requests in flight as a sliding window: a slow or failing item never holds
  up the others.
- 408, 429, 5xx, dropped connections, timeouts, malformed bodies and empty or whitespace-only
  replies are retried `max_retries` times with jittered exponential backoff (`backoff` *
  2^attempt, at most `max_backoff`, or the server's Retry-After). An empty reply is never a
  critique, so it is never cached.
- Redirects are not followed: the Authorization header would go to another host. A 3xx counts
  as a failed attempt (retried like a 5xx), and the final error names where the server points.
- Any other 4xx (e.g. a prompt over the context window) can never succeed: the item fails at
  once, and the completion loop's on_error policy decides (fail after caching everything
  else, or skip it).
- The key is read from `api_key_env` per request and never stored, logged, cached or shown: it
  is masked in any error text before that text is cut.
"""
from __future__ import annotations

import http.client
import itertools
import json
import os
import random
import socket
import threading
import time
import urllib.parse
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Iterator

from ..errors import CriticError, UserError
from .complete import Failure


class _Retryable(Exception):
    pass


class HTTPBackend:
    """`base_url` is the API root (e.g. "https://api.openai.com/v1" or "http://gpu-node:8000/v1").
    The identity is "openai:<model>": the server address is not part of it, so outputs made
    against one vLLM server are cache hits against another serving the same model."""

    uses_prefix = False  # a server gets no prefilled answer

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = None, max_new_tokens: int = 256,
                 temperature: float = 0.0, seed: int | None = None, max_concurrency: int = 8, timeout: float = 120.0,
                 max_retries: int = 5, backoff: float = 1.0, max_backoff: float = 30.0, batch_size: int | None = None):
        base = base_url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError(f"base_url {base_url!r} is not an http(s) URL")
        if parts.username or parts.password:  # the spec goes into run.json and every RM's recipe
            raise UserError(f"base_url {parts.hostname}: carries credentials (user:password@), which would be written "
                            "into run.json and the model's recipe; name an environment variable in api_key_env instead")
        self.model, self.api_key_env = model, api_key_env
        self.identity = f"openai:{model}"
        self.max_new_tokens, self.temperature, self.seed = int(max_new_tokens), float(temperature), seed
        self.max_concurrency, self.timeout = int(max_concurrency), float(timeout)
        self.max_retries, self.backoff, self.max_backoff = int(max_retries), float(backoff), float(max_backoff)
        self.batch_size = int(batch_size or 4 * self.max_concurrency)
        self.params = {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "seed": seed}

    def spec(self) -> dict:
        return {"backend": "openai", "base_url": self.url.removesuffix("/chat/completions"), "model": self.model,
                "api_key_env": self.api_key_env, "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature, "seed": self.seed, "max_concurrency": self.max_concurrency,
                "timeout": self.timeout, "max_retries": self.max_retries}

    def release(self) -> None:
        pass

    def _key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:  # the user's to fix: exit 2, before any request
            raise UserError(f"critic {self.identity}: environment variable {self.api_key_env} (api_key_env) is not set")
        return key

    def _mask(self, text: str) -> str:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return text.replace(key, "***") if key else text

    # ------------------------------------------------------------ one request

    def _post(self, body: bytes, key: str | None) -> tuple[str, int]:
        """One attempt, under one deadline for the whole exchange."""
        parts = urllib.parse.urlsplit(self.url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname, parts.port, timeout=self.timeout)
        expired, sockets = threading.Event(), []

        def expire():  # the response's reader shares this socket: shutting it down ends a blocked read
            expired.set()
            for sock in sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        watchdog = threading.Timer(self.timeout, expire)
        watchdog.daemon = True
        watchdog.start()
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        try:
            conn.connect()
            sockets.append(conn.sock)
            if expired.is_set():
                expire()
            conn.request("POST", parts.path + (f"?{parts.query}" if parts.query else ""), body=body, headers=headers)
            resp = conn.getresponse()
            raw, status, location = resp.read(), resp.status, resp.getheader("Location")
            retry_after = resp.getheader("Retry-After")
        except (OSError, http.client.HTTPException) as e:
            if not expired.is_set():  # else the deadline passed: said below
                raise _Retryable(f"{type(e).__name__}: {e}", None) from None
        finally:
            watchdog.cancel()
            conn.close()
        if expired.is_set():
            raise _Retryable(f"no complete answer within {self.timeout:g} s", None)
        detail = self._mask(raw.decode("utf-8", "replace"))[:300]  # masked first, then cut
        if 300 <= status < 400:  # never followed: the key would go to another host
            raise _Retryable(f"HTTP {status} redirect to {location}, not followed (it would send the key there; "
                             "give the final URL as base_url)", None)
        if status in (408, 429) or status >= 500:
            raise _Retryable(f"HTTP {status}", retry_after)
        if status >= 400:
            raise CriticError(f"{self.identity}: HTTP {status} from {self.url}: {detail}")
        try:
            d = json.loads(raw)
            text = d["choices"][0]["message"]["content"]
            if not isinstance(text, str):
                raise TypeError(f"content is {type(text).__name__}")
            tokens = (d.get("usage") or {}).get("completion_tokens") or 0
        except Exception as e:  # noqa: BLE001 - any shape problem is a malformed body
            raise _Retryable(f"malformed response ({type(e).__name__}: {e})", None) from None
        if not text.strip():
            raise _Retryable("empty reply", None)
        return text.strip(), int(tokens)

    def request(self, text: str, max_new_tokens: int | None = None) -> tuple[str, int]:
        """The reply to one user message, with retries; CriticError when it cannot be had."""
        body = {"model": self.model, "messages": [{"role": "user", "content": text}],
                "max_tokens": int(max_new_tokens or self.max_new_tokens), "temperature": self.temperature}
        if self.seed is not None:
            body["seed"] = self.seed
        payload = json.dumps(body).encode()
        key = self._key()
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            try:
                return self._post(payload, key)
            except _Retryable as e:
                last, retry_after = e.args
                pause = self.backoff * 2**attempt * (1 + random.random()) / 2  # jittered
                if retry_after and str(retry_after).replace(".", "", 1).isdigit():
                    pause = float(retry_after)
                if attempt < self.max_retries:
                    time.sleep(min(pause, self.max_backoff))
            except CriticError as e:
                raise CriticError(self._mask(str(e))) from None
        raise CriticError(self._mask(f"{self.identity}: {self.url} failed {self.max_retries + 1} times; last error: {last}"))

    # ------------------------------------------------------------ many

    def stream(self, texts: list[str], max_new_tokens: int | None = None,
               answer_prefix: str | None = None) -> Iterator[tuple[int, "str | Failure", int]]:
        """(index, reply or Failure, tokens) as each request finishes. At most `max_concurrency`
        requests are out (sent, or answered and not yet taken): the next goes out when the caller
        takes a reply, so a caller that is killed loses at most that many. When 2 x max_concurrency
        items (at least 4) fail in a row, the endpoint is taken for dead and the items not yet sent
        fail without a request."""
        if not texts:
            return
        self._key()  # a missing key fails before any request
        pool = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(texts)))
        in_a_row, dead = 0, max(4, 2 * self.max_concurrency)
        queue = iter(enumerate(texts))
        window: dict = {}  # future -> index; a new request goes out only when a reply is taken

        def send(n: int) -> None:
            for i, text in itertools.islice(queue, n):
                window[pool.submit(self.request, text, max_new_tokens)] = i

        try:
            send(self.max_concurrency)
            while window:
                finished, _ = wait(window, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = window.pop(future)
                    try:
                        text, tokens = future.result()
                        in_a_row = 0
                        yield i, text, tokens
                    except CriticError as e:
                        in_a_row += 1
                        yield i, Failure(str(e)), 0
                if in_a_row < dead:
                    send(len(finished))
            for i, _ in queue:
                yield i, Failure(f"not sent: {dead} items in a row failed before it"), 0
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
