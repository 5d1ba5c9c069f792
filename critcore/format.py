"""Turn (prompt, completion, critique) into the RM's input text and token ids: the tokenizer's chat
template (else templates/rm_plain.txt), a critique appended to the completion behind
templates/rm_critique.txt. Over length, the prompt is trimmed from the left first (earliest turns
first), then the completion from the left, then the critique from the right; every trim is counted.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import partial
from importlib import resources

from .records import Pair, prompt_text

MAX_LENGTH = 512  # tokens per input (prompt, response and critique) unless a configuration says otherwise
TRIM_MARK = "…"
OVER_LENGTH_POLICY = "keep-critique-and-response-end/trim-prompt-then-response-from-left"
# For a tokenizer without a chat template, a saved RM carries one that writes critcore's own plain
# text (templates/rm_plain.txt), so RewardBench and TRL see the text critcore trained on. critcore
# itself recognizes it by its first line and keeps using the plain template.
PLAIN_CHAT_MARK = "{#- critcore plain template: User: ...\n\nAssistant: ... -#}"
PLAIN_CHAT_TEMPLATE = PLAIN_CHAT_MARK + (
    # newlines inside expressions: transformers renders with trim_blocks, which eats one after a tag
    "{%- for m in messages[:-1] %}{{ m['role'] | capitalize }}: {{ m['content'] }}"
    "{{ '\\n\\n' if not loop.last }}{% endfor %}"
    "{{ '\\n\\nAssistant: ' + messages[-1]['content'] }}")


def template(name: str) -> str:
    return resources.files("critcore").joinpath("templates", name).read_text(encoding="utf-8")


@dataclass
class Formatter:
    tokenizer: object
    max_length: int
    plain_template: str = template("rm_plain.txt")
    critique_template: str = template("rm_critique.txt")

    @property
    def chat(self) -> bool:
        """True when the tokenizer has a chat template other than critcore's own export of the plain one."""
        chat_template = getattr(self.tokenizer, "chat_template", None) or ""
        return bool(chat_template) and not chat_template.startswith(PLAIN_CHAT_MARK)

    def text(self, prompt: str | list[dict], completion: str, critique: str | None = None) -> str:
        if critique is not None:
            completion = self.critique_template.format(completion=completion, critique=critique)
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if self.chat:
            return self.tokenizer.apply_chat_template(
                messages + [{"role": "assistant", "content": completion}], tokenize=False
            )
        return self.plain_template.format(prompt=prompt_text(messages), completion=completion)

    def ids(self, text: str) -> list[int]:
        # A chat template already carries its special tokens.
        # verbose=False: the untrimmed text may exceed the model's length; encode() trims it
        return self.tokenizer(text, add_special_tokens=not self.chat, verbose=False)["input_ids"]

    def encode(self, prompt, completion: str, critique: str | None = None) -> tuple[list[int], list[str]]:
        """Token ids within max_length, and the parts trimmed, in order ('prompt', 'completion',
        'critique', 'template'); an empty list when the text fits."""
        ids = self.ids(self.text(prompt, completion, critique))
        trimmed: list[str] = []
        if len(ids) <= self.max_length:
            return ids, trimmed
        parts = {"prompt": prompt, "completion": completion, "critique": critique}
        for part, cut in (("prompt", _trim_prompt), ("completion", _trim), ("critique", partial(_trim, left=False))):
            while len(ids) > self.max_length:
                new = cut(self.tokenizer, parts[part], len(ids) - self.max_length) if parts[part] else None
                if new is None:  # nothing left to cut: on to the next part, then the template cut
                    break
                parts[part] = new
                if part not in trimmed:
                    trimmed.append(part)
                ids = self.ids(self.text(**parts))
        if len(ids) > self.max_length:  # the template alone overflows: keep the end
            ids = ids[-self.max_length:]
            trimmed.append("template")
        return ids, trimmed

    def encode_pairs(self, pairs: list[Pair], with_critiques: bool = True) -> tuple[list[dict], Counter]:
        """Encode both sides of every pair. Returns features and how many sides had each part trimmed."""
        features, trims = [], Counter()
        for pair in pairs:
            use = with_critiques and pair.has_critiques
            chosen, t1 = self.encode(pair.prompt, pair.chosen, pair.chosen_critique if use else None)
            rejected, t2 = self.encode(pair.prompt, pair.rejected, pair.rejected_critique if use else None)
            trims.update(t1 + t2)
            features.append({"chosen": chosen, "rejected": rejected})
        return features, trims


def _trim(tok, text: str, excess: int, left: bool = True) -> str | None:
    """Drop at least `excess` tokens from the left (else the right) of `text`; None when nothing is left to drop."""
    ids = tok(text, add_special_tokens=False, verbose=False)["input_ids"]
    if len(ids) <= 1:
        return None
    if left:
        new = TRIM_MARK + tok.decode(ids[min(len(ids) - 1, excess + 1):], skip_special_tokens=True).lstrip()
    else:
        new = tok.decode(ids[: max(0, len(ids) - excess - 1)], skip_special_tokens=True) + TRIM_MARK
    return new if len(tok(new, add_special_tokens=False, verbose=False)["input_ids"]) < len(ids) else None


def _trim_prompt(tok, prompt, excess: int):
    """Trim a prompt from the left: whole early turns first (keeping a user turn first), then text."""
    if isinstance(prompt, str):
        return _trim(tok, prompt, excess)
    messages = list(prompt)
    if len(messages) > 2:
        drop = 2 if messages[0]["role"] == "user" and messages[1]["role"] == "assistant" else 1
        return messages[drop:]
    for i, message in enumerate(messages):
        new = _trim(tok, message["content"], excess)
        if new is not None:
            return messages[:i] + [{**message, "content": new}] + messages[i + 1:]
    return None
