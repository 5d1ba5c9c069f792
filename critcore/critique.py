"""Synthetic critiques (Ye et al. 2024): critics, the cache-backed `augment`, and the CLI glue.

A critic has an `identity` (part of every cache key), generation `params`, a `template` and
`generate(items) -> list[str]` for items `(prompt_text, response)`. Three backends:

- `LocalCritic`: a transformers causal LM (default SmolLM2-135M-Instruct), batched, left-padded.
- `OpenAICritic`: any OpenAI-compatible `/v1/chat/completions` server (OpenAI, vLLM, llama.cpp).
- `SimulatedCritic`: no model at all; a labelled simulation with accuracy p, for dose-response.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from . import data
from .cache import CritiqueCache, make_key, sha256_text
from .data import Pair, prompt_text
from .errors import CriticMismatchError, UserError

TEMPLATES = Path(__file__).parent / "templates"
DEFAULT_MAX_CHARS = 4000  # per prompt and per response, before templating


class CriticError(RuntimeError):
    """A critic could not produce critiques (after retries, for HTTP)."""


# ---------------------------------------------------------------- templates


def read_named_text(spec: str, folder: Path, prefix: str = "", literal: str = "{", kind: str = "template") -> str:
    """`spec` itself when it contains `literal`, else the file at that path, else
    folder/<prefix><spec>.txt ("paper" or "paper.txt" -> critique_paper.txt with prefix "critique_")."""
    if literal in spec:
        return spec
    if Path(spec).is_file():
        return Path(spec).read_text(encoding="utf-8")
    named = folder / f"{prefix}{spec.removesuffix('.txt')}.txt"
    if named.is_file():
        return named.read_text(encoding="utf-8")
    names = sorted(p.stem.removeprefix(prefix) for p in folder.glob(f"{prefix}*.txt"))
    raise FileNotFoundError(f"no {kind} {spec!r}: give a file path or one of {names}")


def load_template(template: str | os.PathLike | None = None) -> str:
    """Template text from None (the paper's), a name in critcore/templates ("paper" ->
    critique_paper.txt), a file path, or the template text itself (containing {response})."""
    t = "paper" if template is None else str(template)
    text = read_named_text(t, TEMPLATES, "critique_", "{response}", "critique template")
    if "{prompt}" not in text or "{response}" not in text:
        raise ValueError(f"critique template {t!r} must contain both {{prompt}} and {{response}}")
    return text


def render(template: str, prompt: str, response: str, max_chars: int | None = DEFAULT_MAX_CHARS) -> str:
    """Fill the template in one pass (braces inside the texts are left alone). Over-long texts are
    cut to `max_chars`: the prompt keeps its end (the latest turn), the response its start."""
    prompt, response = prompt.strip(), response.strip()
    if max_chars and len(prompt) > max_chars:
        prompt = "…" + prompt[-max_chars:]
    if max_chars and len(response) > max_chars:
        response = response[:max_chars] + "…"
    values = {"prompt": prompt, "response": response}
    return re.sub(r"\{(prompt|response)\}", lambda m: values[m.group(1)], template).strip()


# ---------------------------------------------------------------- the interface


class Critic:
    """Base class. Subclasses set `identity`, `params`, `template` and implement `generate_counted`."""

    identity: str
    params: dict
    template: str
    needs_labels = False  # True: generate needs to know which response is the chosen one
    batch_size = 16  # items per generate call in `augment` (one cache commit each)

    @property
    def template_sha(self) -> str:
        return sha256_text(self.template)

    @property
    def config_hash(self) -> str:
        """Short hash of template and params: two runs with equal identity and config_hash agree."""
        return sha256_text(json.dumps([self.template_sha, self.params], sort_keys=True))[:12]

    def key(self, prompt: str, response: str, label: bool | None = None) -> str:
        return make_key(self.identity, self.template_sha, self.params, prompt, response,
                        label if self.needs_labels else None)

    def generate(self, items: list[tuple[str, str]], labels: list[bool] | None = None) -> list[str]:
        """Critiques of `(prompt_text, response)` items, in order."""
        return [text for text, _ in self.generate_counted(items, labels)]

    def generate_counted(self, items, labels=None) -> list[tuple[str, int]]:
        """(critique, tokens generated) for each item."""
        raise NotImplementedError

    def spec(self) -> dict:
        """A spec that make_critic turns back into an equal critic (same identity and config)."""
        raise NotImplementedError

    def describe(self) -> dict:
        """What a reward model's recipe records of its critic: identity, config hash and spec."""
        return {"identity": self.identity, "config": self.config_hash, "spec": self.spec()}

    def release(self) -> None:
        """Free what the critic loaded (a model); it loads again when next asked."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity!r}, params={self.params})"


# ---------------------------------------------------------------- 1. local transformers model


class LocalCritic(Critic):
    """A causal LM run with transformers: an alias of `backbones.resolve` ("smollm2",
    "gemma3-270m"), a hub name or a local directory / .gguf file.

    A chat model gets the filled template as its user turn; a model without a chat template
    (Gemma 3 270M base) gets the text plus "\\n\\nCritique:" and its answer is cut at the first
    blank line, since base models run on. Generation is batched with left padding, greedy unless
    temperature > 0 (then seeded per batch), under torch.inference_mode. The model loads on the
    first generate, so a run served fully from the cache never loads it."""

    def __init__(self, model: str = "smollm2", *, template=None, max_new_tokens: int = 128,
                 temperature: float = 0.0, seed: int = 0, batch_size: int = 16,
                 max_chars: int | None = DEFAULT_MAX_CHARS, device: str | None = None, dtype: str | None = None):
        import torch

        self.model_name = str(model)
        self.identity = f"local:{self.model_name}"
        self.template = load_template(template)
        self.max_new_tokens, self.temperature, self.seed = int(max_new_tokens), float(temperature), int(seed)
        self.batch_size, self.max_chars = int(batch_size), max_chars
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = dtype or ("bfloat16" if self.device.startswith("cuda") else "float32")
        self.params = {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                       "max_chars": max_chars, "dtype": self.dtype}
        if self.temperature > 0:
            self.params["seed"] = self.seed  # greedy output does not depend on the seed
        self._tok = self._model = None
        from .backbones import check

        check(self.model_name, "critic model")  # a typo fails now, not at the first generate

    def spec(self) -> dict:
        return {"backend": "local", "model": self.model_name, "template": self.template,
                "max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "seed": self.seed,
                "max_chars": self.max_chars, "batch_size": self.batch_size, "dtype": self.dtype}

    def release(self) -> None:
        self._tok = self._model = None

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .backbones import resolve

        path = resolve(self.model_name)
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, self.dtype), trust_remote_code=False)
        self._tok, self._model = tok, model.to(self.device).eval()

    def _input_ids(self, text: str, answer_prefix: str | None) -> list[int]:
        if self._tok.chat_template:
            text = self._tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
            return self._tok(text + (answer_prefix or "").lstrip(), add_special_tokens=False).input_ids
        return self._tok(text + ("\n\nCritique:" if answer_prefix is None else answer_prefix)).input_ids

    def generate_counted(self, items, labels=None) -> list[tuple[str, int]]:
        return self.complete([render(self.template, p, r, self.max_chars) for p, r in items])

    def complete(self, texts: list[str], max_new_tokens: int | None = None,
                 answer_prefix: str | None = None) -> list[tuple[str, int]]:
        """(reply, tokens generated) for already-templated user messages (also used to serve HTTP).
        `answer_prefix` prefills the answer: after the chat template's assistant turn, or after the
        text for a base model (None: a base model gets "\n\nCritique:"). The reply excludes it."""
        import torch
        from transformers import GenerationConfig

        if not texts:
            return []
        self._load()
        tok, model = self._tok, self._model
        eos = model.generation_config.eos_token_id or tok.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        config = GenerationConfig(max_new_tokens=max_new_tokens or self.max_new_tokens,
                                  do_sample=self.temperature > 0,
                                  temperature=self.temperature if self.temperature > 0 else None,
                                  pad_token_id=tok.pad_token_id, eos_token_id=eos)
        encoded = [self._input_ids(t, answer_prefix) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -len(encoded[i]))  # length-sort: less padding
        out: list = [None] * len(texts)
        with torch.inference_mode():
            for b, start in enumerate(range(0, len(order), self.batch_size)):
                idx = order[start : start + self.batch_size]
                batch = tok.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt").to(self.device)
                if self.temperature > 0:
                    torch.manual_seed(self.seed + b)
                gen = model.generate(**batch, generation_config=config)[:, batch["input_ids"].shape[1]:]
                for i, row in zip(idx, gen.tolist()):
                    n = next((k + 1 for k, t in enumerate(row) if t in eos_ids), len(row))  # through EOS
                    text = tok.decode(row[:n], skip_special_tokens=True).strip()
                    if not tok.chat_template:
                        text = text.split("\n\n")[0].strip()
                    out[i] = (text, n)
        return out


# ---------------------------------------------------------------- 2. OpenAI-compatible HTTP


class _Retryable(Exception):
    pass


class OpenAICritic(Critic):
    """Critiques from an OpenAI-compatible server's /v1/chat/completions, with stdlib urllib.

    `base_url` is the API root (e.g. "https://api.openai.com/v1" or "http://gpu-node:8000/v1").
    `api_key_env` names the environment variable holding the key; the key is read per request and
    never stored, logged, cached or shown in a repr or an error (it is masked if a server echoes
    it). Up to `max_concurrency` requests run at once in threads. 429, 5xx, timeouts, dropped
    connections and malformed bodies (and 408) are retried `max_retries` times with exponential backoff
    (`backoff` * 2^attempt seconds, at most `max_backoff`, or the server's Retry-After); then a
    CriticError is raised and nothing of that batch is cached. Other 4xx fail at once.

    The identity is "openai:<model>" (the server address is not part of it, so critiques made
    against one vLLM server are cache hits against another serving the same model).

    Scaling on a cluster with vLLM: on a GPU node run
        vllm serve HuggingFaceTB/SmolLM2-1.7B-Instruct --port 8000
    then point the critic at it with many requests in flight, so vLLM's continuous batching
    fills the GPU:
        critcore critique --critic '{"backend": "openai", "base_url": "http://gpu-node:8000/v1",
            "model": "HuggingFaceTB/SmolLM2-1.7B-Instruct", "max_concurrency": 64}' \\
            --batch-size 512 --data train.jsonl --out train.critiqued.jsonl
    For several servers, put a load balancer in front, or run one job per data shard and server,
    each with its own --cache (SQLite files should not be shared over NFS); the output JSONL files
    carry the critiques and load anywhere with read_pairs."""

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = None, template=None,
                 max_new_tokens: int = 256, temperature: float = 0.0, seed: int | None = None,
                 max_chars: int | None = DEFAULT_MAX_CHARS, max_concurrency: int = 8, timeout: float = 120.0,
                 max_retries: int = 5, backoff: float = 1.0, max_backoff: float = 30.0, batch_size: int | None = None):
        base = base_url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.model, self.api_key_env = model, api_key_env
        self.identity = f"openai:{model}"
        self.template = load_template(template)
        self.max_new_tokens, self.temperature, self.seed = int(max_new_tokens), float(temperature), seed
        self.max_chars, self.max_concurrency, self.timeout = max_chars, int(max_concurrency), float(timeout)
        self.max_retries, self.backoff, self.max_backoff = int(max_retries), float(backoff), float(max_backoff)
        self.batch_size = int(batch_size or 4 * self.max_concurrency)
        self.params = {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                       "seed": seed, "max_chars": max_chars}

    def __repr__(self) -> str:
        return f"OpenAICritic({self.identity!r}, url={self.url!r}, api_key_env={self.api_key_env!r})"

    def spec(self) -> dict:
        return {"backend": "openai", "base_url": self.url.removesuffix("/chat/completions"), "model": self.model,
                "api_key_env": self.api_key_env, "template": self.template, "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature, "seed": self.seed, "max_chars": self.max_chars,
                "max_concurrency": self.max_concurrency, "timeout": self.timeout, "max_retries": self.max_retries}

    def _key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise CriticError(f"{self.identity}: environment variable {self.api_key_env} is not set")
        return key

    def _mask(self, text: str) -> str:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return text.replace(key, "***") if key else text

    def _post(self, body: bytes, key: str | None) -> tuple[str, int]:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode("utf-8", "replace")
            if e.code in (408, 429) or e.code >= 500:
                raise _Retryable(f"HTTP {e.code}", e.headers.get("Retry-After")) from None
            raise CriticError(f"{self.identity}: HTTP {e.code} from {self.url}: {detail}") from None
        except (TimeoutError, urllib.error.URLError, ConnectionError, http.client.HTTPException) as e:
            raise _Retryable(f"{type(e).__name__}: {e}", None) from None
        try:
            d = json.loads(raw)
            text = d["choices"][0]["message"]["content"]
            if not isinstance(text, str):
                raise TypeError(f"content is {type(text).__name__}")
            tokens = (d.get("usage") or {}).get("completion_tokens") or 0
            return text.strip(), int(tokens)
        except Exception as e:  # noqa: BLE001 - any shape problem is a malformed body
            raise _Retryable(f"malformed response ({type(e).__name__}: {e})", None) from None

    def _request(self, text: str, max_new_tokens: int) -> tuple[str, int]:
        body = {"model": self.model, "messages": [{"role": "user", "content": text}],
                "max_tokens": max_new_tokens, "temperature": self.temperature}
        if self.seed is not None:
            body["seed"] = self.seed
        body = json.dumps(body).encode()
        key = self._key()
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            try:
                return self._post(body, key)
            except _Retryable as e:
                last, retry_after = e.args
                wait = self.backoff * 2**attempt * (1 + random.random()) / 2  # jittered
                if retry_after and str(retry_after).replace(".", "", 1).isdigit():
                    wait = float(retry_after)
                if attempt < self.max_retries:
                    time.sleep(min(wait, self.max_backoff))
            except CriticError as e:
                raise CriticError(self._mask(str(e))) from None
        raise CriticError(self._mask(
            f"{self.identity}: {self.url} failed {self.max_retries + 1} times; last error: {last}"))

    def generate_counted(self, items, labels=None) -> list[tuple[str, int]]:
        return self.complete([render(self.template, p, r, self.max_chars) for p, r in items])

    def complete(self, texts: list[str], max_new_tokens: int | None = None) -> list[tuple[str, int]]:
        """(reply, completion tokens) for already-templated user messages, `max_concurrency` at once."""
        if not texts:
            return []
        pool = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(texts)))
        try:
            n = max_new_tokens or self.max_new_tokens
            return [f.result() for f in [pool.submit(self._request, t, n) for t in texts]]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


# ---------------------------------------------------------------- 3. simulated critic

_GOOD = (
    "The response answers the request accurately and helpfully.",
    "The response addresses what the user asked directly, and its content is correct.",
    "The response is helpful and to the point; it contains no evident errors.",
    "The response follows the request closely and gives correct, relevant information.",
)
_FLAWED = (
    "The response has flaws: it does not answer the request well or contains errors.",
    "The response misses what the user asked for and includes questionable content.",
    "The response is unhelpful or partly incorrect; it should address the request more precisely.",
    "The response drifts from the request and should not be trusted as accurate.",
)


class SimulatedCritic(Critic):
    """A SIMULATION, not a model: it is told which response of a pair is the chosen one and writes
    a fixed-phrase critique judging it good (chosen) or flawed (rejected). Each verdict is right
    with probability `p`, decided by a hash of (seed, prompt, response, label), so results do not
    depend on call order or batching. For dose-response studies of critique quality."""

    needs_labels = True
    batch_size = 256

    def __init__(self, p: float, seed: int = 0, *, template=None):
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"simulated critic accuracy p must be in [0, 1], got {p}")
        self.p, self.seed = float(p), int(seed)
        self.identity = f"simulated(p={self.p:g},seed={self.seed})"
        self.template = load_template(template)  # unused by the simulation; kept for uniform keys
        self.params = {}

    def spec(self) -> dict:
        return {"backend": "simulated", "p": self.p, "seed": self.seed, "template": self.template}

    def generate_counted(self, items, labels=None) -> list[tuple[str, int]]:
        if labels is None or len(labels) != len(items):
            raise ValueError("the simulated critic needs each item's label (True = the chosen response)")
        out = []
        for (prompt, response), chosen in zip(items, labels):
            h = hashlib.sha256(f"{self.seed}\0{prompt}\0{response}\0{bool(chosen)}".encode()).digest()
            right = int.from_bytes(h[:8], "big") / 2**64 < self.p
            phrases = _GOOD if (bool(chosen) == right) else _FLAWED
            out.append((phrases[h[8] % len(phrases)], 0))
        return out


_BACKENDS = {"local": LocalCritic, "openai": OpenAICritic, "simulated": SimulatedCritic}


# ---------------------------------------------------------------- spec parser


CRITIC_FORMS = ('none | smollm2 | gemma3-270m | local:PATH_OR_HUB_NAME | org/model | simulated:P[,seed=N] | '
                '{"backend": "openai", "base_url": URL, "model": NAME, "api_key_env": VAR, ...}')


def parse_critic_spec(spec) -> dict | None:
    """A critic spec as a constructor mapping {"backend": ..., ...}, or None for No-Critiques,
    without building anything. The forms: CRITIC_FORMS (a dict may also be given as JSON text)."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "none")):
        return None
    if isinstance(spec, str) and spec.lstrip().startswith("{"):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as e:
            raise UserError(f"critic spec is not valid JSON ({e.msg}); forms: {CRITIC_FORMS}") from None
    if isinstance(spec, str):
        if spec.startswith("simulated:"):
            p, _, rest = spec.removeprefix("simulated:").partition(",")
            try:
                kw = dict(item.split("=", 1) for item in rest.split(",") if item)
                return {"backend": "simulated", "p": float(p), **{k.strip(): int(v) for k, v in kw.items()}}
            except ValueError:
                raise UserError(f"bad simulated critic {spec!r}: write simulated:P or simulated:P,seed=N") from None
        if spec.startswith("openai:"):
            raise UserError('give an OpenAI-compatible critic as a mapping: '
                            '{"backend": "openai", "base_url": ..., "model": ...}')
        return {"backend": "local", "model": spec.removeprefix("local:")}
    if not isinstance(spec, dict):
        raise UserError(f"a critic spec is a string or a mapping, got {type(spec).__name__}; forms: {CRITIC_FORMS}")
    spec = dict(spec)
    backend = spec.setdefault("backend", "local")
    if backend == "none":
        return None
    if backend not in _BACKENDS:
        raise UserError(f"unknown critic backend {backend!r}; expected local, openai, simulated or none")
    import inspect

    accepted = set(inspect.signature(_BACKENDS[backend].__init__).parameters) - {"self"}
    unknown = sorted(set(spec) - accepted - {"backend"})
    if unknown:
        raise UserError(f"critic backend {backend!r} takes no option {unknown[0]!r}; options: {', '.join(sorted(accepted))}")
    return spec


def make_critic(spec, options=None, **overrides) -> Critic | None:
    """A critic from a spec (parse_critic_spec; a Critic is returned as is), or None for
    No-Critiques. `options` (critcore.config.CriticOptions or a mapping) fill the constructor
    arguments the backend takes and the spec does not set; `overrides` replace the spec's."""
    if isinstance(spec, Critic):
        return spec
    spec = parse_critic_spec(spec)
    if spec is None:
        return None
    backend = spec.pop("backend")
    cls = _BACKENDS[backend]
    import dataclasses
    import inspect

    if dataclasses.is_dataclass(options):
        options = dataclasses.asdict(options)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    kw = {k: v for k, v in (options or {}).items() if v is not None and k in accepted and k not in spec}
    kw.update(spec)
    kw.update({k: v for k, v in overrides.items() if k in accepted})
    try:
        return cls(**kw)
    except TypeError as e:
        raise UserError(f"critic {backend}: {e}") from None


def critic_for_model(recipe: dict | None, requested=None, options=None, allow_mismatch: bool = False):
    """The critic to score a reward model's test pairs with: `requested` (a spec; None = the one in
    the model's recipe). Returns (critic or None, what the recipe says: a dict, None for a
    No-Critiques RM, or "unknown" for a checkpoint without a recipe).

    A requested critic other than the recipe's, or none for a critique RM, is a
    CriticMismatchError naming both, unless allow_mismatch. A recipe whose critiques came with
    the training data (no spec to rebuild the critic from) needs `requested` or test pairs that
    carry the same critiques (see check_recipe)."""
    expected = "unknown" if recipe is None else recipe.get("critic")
    if requested is None:
        if isinstance(expected, dict) and expected.get("spec"):
            return make_critic(expected["spec"], options), expected
        return None, expected
    critic = make_critic(requested, options)
    if not allow_mismatch and expected != "unknown":
        got = None if critic is None else {"identity": critic.identity, "config": critic.config_hash}
        want = None if expected is None else {"identity": expected.get("identity"), "config": expected.get("config")}
        if got != want:
            raise CriticMismatchError(
                f"the model was trained {_say(expected)}, but it would be scored {_say(got)}; "
                "pass --allow-critic-mismatch (allow_critic_mismatch: true) for a cross-critic experiment")
    return critic, expected


def _say(critic) -> str:
    if critic is None:
        return "without critiques"
    return f"with critiques by {critic.get('identity')!r} (config {critic.get('config')})"


def check_recipe(expected, pairs: list[Pair], allow_mismatch: bool = False) -> None:
    """Test pairs must carry the critiques the model was trained with (`expected`, from
    critic_for_model): none for a No-Critiques RM, the same critic's for a critique RM."""
    if expected == "unknown" or allow_mismatch:
        return
    tags = {(p.meta.get("critic"), p.meta.get("critic_config")) for p in pairs if p.has_critiques}
    got = None if not tags else {"identity": sorted(tags, key=str)[0][0], "config": sorted(tags, key=str)[0][1]}
    want = None if expected is None else {"identity": expected.get("identity"), "config": expected.get("config")}
    if len(tags) > 1 or got != want or (tags and sum(p.has_critiques for p in pairs) < len(pairs)):
        hint = ("; its critiques came with its training data: give --critic with that critic, or test data "
                "critiqued by it" if isinstance(expected, dict) and not expected.get("spec") else "")
        raise CriticMismatchError(f"the model was trained {_say(expected)}, but the test pairs carry "
                                  f"{_say(got)[5:] if got else 'no critiques'}{hint}")


# ---------------------------------------------------------------- augmentation


def critique_texts(critic: Critic, items: list[tuple[str, str, bool | None]], cache: CritiqueCache,
                   batch_size: int | None = None, progress: bool = True) -> list[str]:
    """Critiques of (prompt text, response, label) items through the cache: cached ones are
    reused, identical items generated once, the rest go to the critic longest first in batches,
    each committed to the cache as soon as it is done."""
    keys = [critic.key(text, response, label) for text, response, label in items]
    todo = dict(zip(keys, items))
    cache.stats["duplicates"] += len(items) - len(todo)
    found = cache.get_many(list(todo))
    missing = sorted((k for k in todo if k not in found), key=lambda k: -len(todo[k][0]) - len(todo[k][1]))
    bs = batch_size or critic.batch_size
    from tqdm.auto import tqdm

    with tqdm(total=len(missing), desc=f"critiques ({critic.identity})", unit="item", disable=not progress) as bar:
        for i in range(0, len(missing), bs):
            chunk = missing[i : i + bs]
            labels = [todo[k][2] for k in chunk] if critic.needs_labels else None
            results = critic.generate_counted([todo[k][:2] for k in chunk], labels)
            cache.put_many(critic.identity, [(k, text, n) for k, (text, n) in zip(chunk, results)])
            found.update((k, text) for k, (text, _) in zip(chunk, results))
            bar.update(len(chunk))
    return [found[k] for k in keys]


def open_cache(cache) -> tuple[CritiqueCache, bool]:
    """(the cache, whether this call opened it and must close it) for a CritiqueCache, a path or
    None (in memory)."""
    if isinstance(cache, CritiqueCache):
        return cache, False
    return CritiqueCache(cache or ":memory:"), True


def augment(pairs: list[Pair], critic, cache: CritiqueCache | str | os.PathLike | None = None,
            batch_size: int | None = None, progress: bool = True) -> list[Pair]:
    """The pairs with chosen_critique / rejected_critique filled and meta["critic"] set.

    `critic` is a Critic or a spec for make_critic; "none" clears critiques. `cache` is a
    CritiqueCache, a path to one, or None (in memory); see critique_texts."""
    critic = make_critic(critic)
    if critic is None:
        return [replace(p, chosen_critique=None, rejected_critique=None,
                        meta={**{k: v for k, v in p.meta.items() if k != "critic_config"}, "critic": "none"})
                for p in pairs]
    store, owned = open_cache(cache)
    try:
        items = [(prompt_text(p.prompt), response, label) for p in pairs
                 for response, label in ((p.chosen, True), (p.rejected, False))]
        texts = critique_texts(critic, items, store, batch_size, progress)
    finally:
        if owned:
            store.close()
    tag = {"critic": critic.identity, "critic_config": critic.config_hash}
    return [replace(p, chosen_critique=texts[2 * i], rejected_critique=texts[2 * i + 1], meta={**p.meta, **tag})
            for i, p in enumerate(pairs)]


def check_same_critic(train_pairs: list[Pair], test_pairs: list[Pair]) -> str | None:
    """Raise CriticMismatchError unless train and test were critiqued alike: both without
    critiques, or both fully critiqued by one critic with one template and parameters.
    Returns the critic identity (None when neither side has critiques)."""

    def side(pairs, name):
        n = sum(p.has_critiques for p in pairs)
        if 0 < n < len(pairs):
            raise CriticMismatchError(f"{name}: only {n} of {len(pairs)} pairs have critiques")
        if n == 0:
            return None
        tags = {(p.meta.get("critic", "unknown"), p.meta.get("critic_config")) for p in pairs}
        if len(tags) > 1:
            raise CriticMismatchError(f"{name} mixes critics: {sorted(tags, key=str)}")
        return tags.pop()

    a, b = side(train_pairs, "train"), side(test_pairs, "test")
    if a != b:
        say = lambda t: "no critiques" if t is None else f"critic {t[0]!r} (config {t[1]})"  # noqa: E731
        raise CriticMismatchError(
            f"train and test must use the same critic: train has {say(a)}, test has {say(b)}")
    return a[0] if a else None
