"""An OpenAI-compatible /v1/chat/completions server (OpenAI, vLLM, llama.cpp's server, Ollama),
with the standard library's http.client, built to survive a faulty server and to waste no paid
request (docs/llm.md):

- The key is read from `api_key_env` by `read_key` alone, per request, stripped and checked, never
  stored; `mask` hides every form of it in any error text before that text is cut, stored or printed.
- The first request goes out alone; then a sliding window of `max_concurrency`, a new request only
  when the caller takes a reply, so a killed run loses at most `max_concurrency` requests.
- One deadline per request (`timeout`, a watchdog closes the connection); CONNECT_TIMEOUT within it.
- 408, 429, 5xx, 3xx (never followed: the key would go to another host), dropped connections,
  timeouts, malformed bodies and empty replies are retried with jittered exponential backoff (or
  the server's Retry-After); any other 4xx fails the item at once (on_error decides).
- EndpointError ends the run at once (what finished is cached): a 401 or 403, an unreachable
  endpoint, a silent first request, a failing first item, or 2 x max_concurrency (at least 4)
  failing items in a row.
"""
from __future__ import annotations

import functools
import html
import http.client
import itertools
import json
import os
import random
import socket
import ssl
import threading
import urllib.parse
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Iterable, Iterator

from ..errors import CriticError, UserError
from .complete import Failure

CONNECT_TIMEOUT = 10.0  # seconds to open a connection and finish TLS (at most `timeout`)
CONNECT_RETRIES = 2  # an unreachable endpoint is tried this many more times, after 0.5 s, then 1 s
CONNECT_PAUSE = 0.5


class EndpointError(CriticError):
    """The endpoint cannot serve any item: its key refused, unreachable, silent or failing. The
    run stops at once, whatever on_error says; every reply that came before is cached."""


class _Refused(CriticError):
    """This item can never succeed (a 4xx such as a prompt over the context window); others may."""


class _Retryable(Exception):
    pass


class _Unreachable(Exception):
    """No connection: (why, whether a short retry may help)."""


class _Stopped(Exception):
    """The stream ended (a fatal error elsewhere, or the caller stopped) before this item's next try."""


# ------------------------------------------------------------ the key


def key_problem(key: str) -> str | None:
    """What makes an API key (already stripped) unusable in an HTTP header, or None. Never the value."""
    if any(c in "\r\n" for c in key):
        return "has a line break inside it (more than one line?)"
    if any(c.isspace() for c in key):
        return "has a space or tab inside it"
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        return "contains a control character"
    if not key.isascii():
        return ("contains a non-ASCII character (e.g. a typographic quote or a non-breaking space pasted with it), "
                "which an HTTP header cannot carry")
    return None


def read_key(env: str | None, required: bool = True) -> str | None:
    """The API key in the environment variable `env`, without surrounding whitespace; None when
    `env` is None, or when the variable is unset and not `required`. A UserError (one line,
    naming the variable and the problem, never the value) when it is unusable."""
    if not env:
        return None
    raw = os.environ.get(env)
    if raw is None:
        if required:  # the user's to fix: exit 2, before any request
            raise UserError(f"environment variable {env} (api_key_env) is not set")
        return None
    key = raw.strip()
    problem = "is empty" if not key else key_problem(key)
    if problem:
        raise UserError(f"environment variable {env} (api_key_env): the key {problem}; fix the variable "
                        "(its value is not shown)")
    return key


@functools.lru_cache(maxsize=64)
def _forms(secrets: tuple[str, ...]) -> tuple[str, ...]:
    out = set()
    for raw in secrets:
        for s in {raw, raw.strip()}:
            if len(s) < 4:  # too short to mask without hiding ordinary text
                continue
            out |= {s, repr(s)[1:-1], json.dumps(s)[1:-1], json.dumps(s, ensure_ascii=False)[1:-1],
                    s.encode("unicode_escape").decode("ascii"), repr(s.encode("utf-8"))[2:-1],
                    urllib.parse.quote(s, safe=""), urllib.parse.quote(s), urllib.parse.quote_plus(s),
                    html.escape(s)}
    return tuple(sorted(out, key=len, reverse=True))


def mask(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every form of each secret (raw, stripped, escaped, URL- or HTML-encoded) replaced by ***."""
    for form in _forms(tuple(s for s in secrets if s)):
        text = text.replace(form, "***")
    return text


def _unreachable(e: OSError, host: str, connect_timeout: float) -> tuple[str, bool]:
    """Why a connection could not be opened, and whether a short retry may help."""
    if isinstance(e, TimeoutError):  # it waited long enough
        return f"no connection within {connect_timeout:g} s", False
    if isinstance(e, socket.gaierror):
        return f"DNS lookup of {host} failed ({e.strerror or e})", True
    if isinstance(e, ssl.SSLError):
        return f"TLS error ({getattr(e, 'verify_message', None) or e.reason or e})", True
    if isinstance(e, ConnectionRefusedError):
        return "connection refused", True
    return f"{type(e).__name__}: {e.strerror or e}", True


class HTTPBackend:
    """`base_url` is the API root (e.g. "https://api.openai.com/v1" or "http://gpu-node:8000/v1").
    The identity is "openai:<model>": the server address is not part of it, so outputs made
    against one vLLM server are cache hits against another serving the same model."""

    uses_prefix = False  # a server gets no prefilled answer
    batch_size = 1  # one item per request, committed to the cache as it arrives: each is paid for
    shards = False  # under a launcher only the main process asks: the server spreads the load, not the processes

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = None, max_new_tokens: int = 256,
                 temperature: float = 0.0, seed: int | None = None, max_concurrency: int = 8, timeout: float = 120.0,
                 max_retries: int = 5, backoff: float = 1.0, max_backoff: float = 30.0):
        base = base_url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError(f"base_url {base_url!r} is not an http(s) URL")
        if parts.username or parts.password:  # the spec goes into run.json and every RM's recipe
            raise UserError(f"base_url {parts.hostname}: carries credentials (user:password@), which would be written "
                            "into run.json and the model's recipe; name an environment variable in api_key_env instead")
        if not self.url.isascii() or any(c.isspace() or ord(c) < 32 for c in self.url):
            raise UserError(f"base_url {base_url!r}: has a space, control or non-ASCII character; percent-encode it")
        self.model, self.api_key_env = model, api_key_env
        self.identity = f"openai:{model}"
        read_key(api_key_env, required=False)  # a key that is set but unusable fails here, when the critic is built
        self.max_new_tokens, self.temperature, self.seed = int(max_new_tokens), float(temperature), seed
        self.max_concurrency, self.timeout = int(max_concurrency), float(timeout)
        self.max_retries, self.backoff, self.max_backoff = int(max_retries), float(backoff), float(max_backoff)
        self.params = {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "seed": seed}

    def spec(self) -> dict:
        return {"backend": "openai", "base_url": self.url.removesuffix("/chat/completions"), "model": self.model,
                "api_key_env": self.api_key_env, "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature, "seed": self.seed, "max_concurrency": self.max_concurrency,
                "timeout": self.timeout, "max_retries": self.max_retries}

    def release(self) -> None:
        pass

    def _mask(self, text: str) -> str:
        return mask(text, [os.environ.get(self.api_key_env)] if self.api_key_env else [])

    def _error(self, cls, text: str) -> CriticError:
        """An error of class `cls` with `text` on one line, the key masked in every form."""
        return cls(self._mask(" ".join(text.split())))

    # ------------------------------------------------------------ one request

    def _post(self, body: bytes, key: str | None, first: bool) -> tuple[str, int]:
        """One attempt, under one deadline for the whole exchange. `first`: no request of this
        stream has been answered yet, so a silence is the endpoint's, not this item's."""
        parts = urllib.parse.urlsplit(self.url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connect_timeout = min(CONNECT_TIMEOUT, self.timeout)
        conn = cls(parts.hostname, parts.port, timeout=connect_timeout)
        expired, sockets, answered = threading.Event(), [], False

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
            try:
                conn.connect()
            except OSError as e:
                raise _Unreachable(*_unreachable(e, parts.hostname, connect_timeout)) from None
            conn.sock.settimeout(self.timeout)
            sockets.append(conn.sock)
            if expired.is_set():
                expire()
            try:
                conn.request("POST", parts.path + (f"?{parts.query}" if parts.query else ""), body=body, headers=headers)
            except (ValueError, UnicodeError) as e:  # a header http.client refuses: its text may hold the key
                raise self._error(EndpointError, f"{self.identity}: the request to {self.url} could not be built "
                                                 f"({type(e).__name__}: {e})") from None
            resp = conn.getresponse()
            answered = True
            raw, status, location = resp.read(), resp.status, resp.getheader("Location")
            retry_after = resp.getheader("Retry-After")
        except (OSError, http.client.HTTPException) as e:
            if isinstance(e, TimeoutError):  # the socket's own timeout: the deadline passed too
                expired.set()
            if not expired.is_set():  # else the deadline passed: said below
                raise _Retryable(f"{type(e).__name__}: {e}", None) from None
        finally:
            watchdog.cancel()
            conn.close()
        if expired.is_set():
            if not answered and first:  # bounded by the connect timeout plus one deadline
                raise self._error(EndpointError, f"endpoint silent: {self.url} accepted the connection but gave no "
                                                 f"answer within {self.timeout:g} s (timeout)")
            raise _Retryable(f"no {'complete ' if answered else ''}answer within {self.timeout:g} s", None)
        detail = self._mask(raw.decode("utf-8", "replace"))[:300]  # masked, then cut
        if 300 <= status < 400:  # never followed: the key would go to another host
            raise _Retryable(f"HTTP {status} redirect to {location}, not followed (it would send the key there; "
                             "give the final URL as base_url)", None)
        if status in (408, 429) or status >= 500:
            raise _Retryable(f"HTTP {status}", retry_after)
        if status in (401, 403):
            said = (f"the key in {self.api_key_env} (api_key_env) was refused" if self.api_key_env else
                    "no key was sent: name the environment variable that holds one in api_key_env")
            raise self._error(EndpointError, f"{self.identity}: HTTP {status} from {self.url}: {said}; nothing more "
                                             f"is sent: {detail}")
        if status >= 400:
            raise self._error(_Refused, f"{self.identity}: HTTP {status} from {self.url}: {detail}")
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

    def request(self, text: str, max_new_tokens: int | None = None, first: bool = False,
                stop: threading.Event | None = None) -> tuple[str, int]:
        """The reply to one user message, with retries. Raises EndpointError when the endpoint
        cannot serve any item, a CriticError when this item cannot be had; each on one line,
        the key masked. `stop` (set by the stream) ends the retries."""
        body = {"model": self.model, "messages": [{"role": "user", "content": text}],
                "max_tokens": int(max_new_tokens or self.max_new_tokens), "temperature": self.temperature}
        if self.seed is not None:
            body["seed"] = self.seed
        payload = json.dumps(body).encode()
        key = read_key(self.api_key_env)
        stop = stop or threading.Event()
        last, unreachable = "no attempt", 0
        for attempt in range(self.max_retries + 1):
            if stop.is_set():
                raise _Stopped()
            try:
                return self._post(payload, key, first)
            except _Unreachable as e:
                why, retry = e.args
                unreachable += 1
                if not retry or unreachable > CONNECT_RETRIES or attempt == self.max_retries:
                    tries = f" ({unreachable} attempts)" if unreachable > 1 else ""
                    raise self._error(EndpointError, f"endpoint unreachable: {self.url}: {why}{tries}") from None
                pause = CONNECT_PAUSE * 2 ** (unreachable - 1)
            except _Retryable as e:
                last, retry_after = e.args
                pause = self.backoff * 2**attempt * (1 + random.random()) / 2  # jittered
                if retry_after and str(retry_after).replace(".", "", 1).isdigit():
                    pause = float(retry_after)
            if attempt < self.max_retries:
                stop.wait(min(pause, self.max_backoff))
        raise self._error(CriticError, f"{self.identity}: {self.url} failed {self.max_retries + 1} times; "
                                       f"last error: {last}")

    # ------------------------------------------------------------ many

    def stream(self, texts: list[str], max_new_tokens: int | None = None,
               answer_prefix: str | None = None) -> Iterator[tuple[int, "str | Failure", int]]:
        """(index, reply or Failure, tokens) as each request finishes, in the window the module
        describes. An EndpointError is raised once the requests already out have come back."""
        if not texts:
            return
        read_key(self.api_key_env)  # a missing key fails before any request
        pool = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(texts)))
        stop = threading.Event()
        queue = iter(enumerate(texts))
        window: dict = {}  # future -> index; a new request goes out only when a reply is taken
        answered, in_a_row, fatal = False, 0, None

        def send(n: int) -> None:
            for i, text in itertools.islice(queue, max(0, n)):
                window[pool.submit(self.request, text, max_new_tokens, not answered, stop)] = i

        try:
            send(1)
            while window:
                finished, _ = wait(window, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = window.pop(future)
                    try:
                        text, tokens = future.result()
                    except _Stopped:
                        continue
                    except EndpointError as e:
                        fatal = fatal or e
                        stop.set()
                        continue
                    except _Refused as e:  # the endpoint answered: this item alone can never succeed
                        answered, in_a_row = True, 0
                        yield i, Failure(str(e)), 0
                        continue
                    except CriticError as e:  # retries ran out
                        in_a_row += 1
                        if fatal is None and in_a_row >= (max(4, 2 * self.max_concurrency) if answered else 1):
                            fatal = self._error(EndpointError, f"endpoint failing: {self.url}: " + (
                                f"{in_a_row} items in a row failed" if answered else "the first item failed")
                                + f"; last: {e}")
                            stop.set()
                        yield i, Failure(str(e)), 0
                        continue
                    answered, in_a_row = True, 0
                    yield i, text, tokens
                if fatal is None:
                    send((self.max_concurrency if answered else 1) - len(window))
            if fatal is not None:
                raise fatal.with_traceback(None)  # its worker thread's frames say nothing more
        finally:
            stop.set()  # a caller that stopped early ends the retries of what is still out
            pool.shutdown(wait=True, cancel_futures=True)
