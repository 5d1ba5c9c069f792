"""Local models: any alias, GGUF file, model folder or hub name that critcore.backbones resolves,
run by one of two engines (bench/critique_throughput.py measures them, and llama.cpp, on the
same items):

- "transformers" (the default): bf16 on a GPU and on a CPU with native bf16 instructions
  (AVX512-BF16 or AMX), where it measured 1.8x the fp32 speed; fp32 elsewhere, and fp32 is
  the reference (dtype: float32), whose greedy output does not depend on the batch.
- "ctranslate2" (pip install ctranslate2): the checkpoint converted once into a CTranslate2
  model (cached under $CRITCORE_CACHE/ct2), float32 by default, whose texts equal the fp32
  reference; int8 halves the memory (compute_type: int8). On the 2-core CPU here it was 2x
  transformers at batch 1 and no faster at batch 16.

Generation is greedy unless temperature > 0 (then seeded). Chat models get each prompt as a user
turn; a base model without a chat template (Gemma 3 270M) gets the text plus "\\n\\nCritique:"
and its answer is cut at the first blank line, since base models run on. The model loads on the
first call, so a run served from the cache never loads it. The engine and its compute type are
part of `params`, and so of every cache key.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Iterator

from .. import atomic, distributed
from ..backbones import _file_key, cache_dir, check, from_pretrained, resolve
from ..errors import UserError
from ..hardware import use_bf16
from .complete import in_order

ENGINES = ("ctranslate2", "transformers")
BASE_PREFIX = "\n\nCritique:"
DTYPES = ("float32", "bfloat16", "float16")  # transformers
COMPUTE_TYPES = ("float32", "int8", "int8_float32", "bfloat16", "int8_bfloat16", "float16", "int8_float16")  # ctranslate2


def _one_of(name: str, value, allowed) -> None:
    if value not in allowed:
        raise UserError(f"critic {name} {value!r}: expected one of {', '.join(allowed)}")


class LocalBackend:
    """A local causal LM. `complete` / `stream` take already-templated user messages."""

    uses_prefix = True
    shards = True  # under a launcher each process generates its share of the items, on its own device

    def __init__(self, model: str = "smollm2", *, engine: str | None = None, compute_type: str | None = None,
                 max_new_tokens: int = 128, temperature: float = 0.0, seed: int = 0, batch_size: int = 16,
                 device: str | None = None, dtype: str | None = None):
        self.model_name = str(model)
        check(self.model_name, "critic model")  # a typo fails now (before torch loads), not at the first generate
        import torch

        self.engine = engine or "transformers"
        _one_of("engine", self.engine, ENGINES)
        self.identity = f"local:{self.model_name}"
        self.max_new_tokens, self.temperature, self.seed = int(max_new_tokens), float(temperature), int(seed)
        self.batch_size = int(batch_size)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.params = {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature}
        if self.engine == "transformers":
            self.dtype = dtype or ("bfloat16" if use_bf16(self.device.split(":")[0]) else "float32")
            _one_of("dtype", self.dtype, DTYPES)
            self.params["dtype"] = self.dtype
        else:
            if importlib.util.find_spec("ctranslate2") is None:
                raise UserError("engine ctranslate2 needs the ctranslate2 package: pip install ctranslate2")
            self.compute_type = compute_type or "float32"
            _one_of("compute_type", self.compute_type, COMPUTE_TYPES)
            self.params.update(engine="ctranslate2", compute_type=self.compute_type)
        if self.temperature > 0:
            self.params["seed"] = self.seed  # greedy output does not depend on the seed
        self._tok = self._model = None

    def spec(self) -> dict:
        out = {"backend": "local", "model": self.model_name, "engine": self.engine, "max_new_tokens": self.max_new_tokens,
               "temperature": self.temperature, "seed": self.seed, "batch_size": self.batch_size}
        out.update({"dtype": self.dtype} if self.engine == "transformers" else {"compute_type": self.compute_type})
        return out

    def release(self) -> None:
        self._tok = self._model = None

    # ------------------------------------------------------------ loading

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve(self.model_name, "critic model")
        tok = from_pretrained(AutoTokenizer, path, "critic model")
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self._tok = tok
        self._eos = set(_generation_eos(path) or [tok.eos_token_id])
        if self.engine == "transformers":
            self._model = from_pretrained(AutoModelForCausalLM, path, "critic model", use_safetensors=True,
                                          dtype=getattr(torch, self.dtype)).to(self.device).eval()
        else:
            import ctranslate2

            device, _, index = self.device.partition(":")  # "cuda" is the process's own GPU (critcore.distributed)
            index = int(index) if index else torch.cuda.current_device() if device == "cuda" else 0
            self._model = ctranslate2.Generator(str(ct2_model(path, self.compute_type)), device=device, device_index=index,
                                                compute_type=self.compute_type, intra_threads=torch.get_num_threads())

    def _input_ids(self, text: str, answer_prefix: str | None) -> list[int]:
        if self._tok.chat_template:
            text = self._tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
            return self._tok(text + (answer_prefix or "").lstrip(), add_special_tokens=False).input_ids
        return self._tok(text + (BASE_PREFIX if answer_prefix is None else answer_prefix)).input_ids

    # ------------------------------------------------------------ generating

    def complete(self, texts: list[str], max_new_tokens: int | None = None,
                 answer_prefix: str | None = None) -> list[tuple[str, int]]:
        """(reply, tokens generated) for each already-templated user message (also used to serve
        HTTP). `answer_prefix` prefills the answer (after the chat template's assistant turn, or
        after the text for a base model) and comes back in front of the reply; None gives a base
        model "\\n\\nCritique:", kept out of the reply."""
        return in_order(self.stream(texts, max_new_tokens, answer_prefix), len(texts))

    def stream(self, texts: list[str], max_new_tokens: int | None = None,
               answer_prefix: str | None = None) -> Iterator[tuple[int, str, int]]:
        """(index, reply, tokens) as each batch finishes; batches are length-sorted (less padding)."""
        if not texts:
            return
        self._load()
        encoded = [self._input_ids(t, answer_prefix) for t in texts]
        n_new = int(max_new_tokens or self.max_new_tokens)
        generate = self._generate_transformers if self.engine == "transformers" else self._generate_ct2
        head = (answer_prefix or "").strip()
        for b, idx in enumerate(self.batches([len(e) for e in encoded])):
            for i, row in zip(idx, generate([encoded[i] for i in idx], n_new, b)):
                text, n = self.reply(row, answer_prefix)
                yield i, (f"{head} {text}".strip() if head else text), n

    def reply(self, row: list[int], answer_prefix: str | None = None) -> tuple[str, int]:
        """(text, tokens) of one generated row: cut through the first end-of-sequence token,
        decoded; a base model's (no chat template) reply ends at its first blank line."""
        n = next((k + 1 for k, t in enumerate(row) if t in self._eos), len(row))  # through EOS
        text = self._tok.decode(row[:n], skip_special_tokens=True).strip()
        if not self._tok.chat_template and answer_prefix is None:
            text = text.split("\n\n")[0].strip()
        return text, n

    def batches(self, lengths: list[int]) -> list[list[int]]:
        """The batches `stream` runs, as indices into its texts: longest prompts first (less padding).
        Under a launcher the texts are this process's share, and so is the batch (distributed.share)."""
        order, size = sorted(range(len(lengths)), key=lambda i: -lengths[i]), distributed.share(self.batch_size)
        return [order[i:i + size] for i in range(0, len(order), size)]

    def _generate_transformers(self, batch: list[list[int]], n_new: int, b: int) -> list[list[int]]:
        import torch
        from transformers import GenerationConfig

        model, tok = self._model, self._tok
        config = GenerationConfig(max_new_tokens=n_new, do_sample=self.temperature > 0,
                                  temperature=self.temperature if self.temperature > 0 else None,
                                  pad_token_id=tok.pad_token_id, eos_token_id=sorted(self._eos))
        with torch.inference_mode():
            inputs = tok.pad({"input_ids": batch}, return_tensors="pt").to(self.device)
            if self.temperature > 0:
                torch.manual_seed(self.seed + b)
            return model.generate(**inputs, generation_config=config)[:, inputs["input_ids"].shape[1]:].tolist()

    def _generate_ct2(self, batch: list[list[int]], n_new: int, b: int) -> list[list[int]]:
        import ctranslate2

        tokens = [self._tok.convert_ids_to_tokens(ids) for ids in batch]
        end = self._tok.convert_ids_to_tokens(sorted(self._eos))
        sampling = {"sampling_topk": 1}
        if self.temperature > 0:
            ctranslate2.set_random_seed(self.seed + b)
            sampling = {"sampling_topk": 0, "sampling_temperature": self.temperature}
        results = self._model.generate_batch(tokens, max_length=n_new, include_prompt_in_result=False, end_token=end,
                                             beam_size=1, **sampling)
        return [r.sequences_ids[0] for r in results]


def _generation_eos(path: str) -> list[int] | None:
    """The end-of-sequence ids in a checkpoint's generation_config.json, if it has one."""
    try:
        eos = json.loads((Path(path) / "generation_config.json").read_text()).get("eos_token_id")
    except (OSError, ValueError):
        return None
    return eos if isinstance(eos, list) else [eos] if eos is not None else None


def ct2_model(path: str, compute_type: str) -> Path:
    """A CTranslate2 conversion of the transformers checkpoint at `path`, quantized for
    `compute_type`, made once and cached beside critcore's dequantized models."""
    source = Path(path)
    stamp = _file_key(source / "config.json") if (source / "config.json").is_file() else "hub"
    out = cache_dir() / "ct2" / f"{source.name}-{stamp}-{compute_type}"
    with atomic.made_once(out, "model.bin") as needed:
        if needed:
            from ctranslate2.converters import TransformersConverter

            quantization = {"int8_float32": "int8", "int8_bfloat16": "int8_bfloat16"}.get(compute_type, compute_type)
            with atomic.atomic_dir(out) as tmp:
                TransformersConverter(str(source), low_cpu_mem_usage=True).convert(str(tmp), quantization=quantization,
                                                                                   force=True)
    return out
