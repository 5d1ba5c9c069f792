"""RM input formatting on the real tokenizers: chat vs plain template, critiques, the No-Critiques
baseline, and the over-length policy (what is trimmed, in which order, counted, nothing dropped)."""
from collections import Counter

import pytest
from transformers import AutoTokenizer

from critcore import backbones
from critcore.loaders import load_jsonl
from critcore.records import Pair
from critcore.format import Formatter

PROMPT = "What is the capital of France?"
COMPLETION = "The capital of France is Paris."
CRITIQUE = "Correct and concise; it answers the question directly."


@pytest.fixture(scope="module", params=["minilm", "smollm2"])
def tok(request):
    return AutoTokenizer.from_pretrained(backbones.resolve(request.param))


@pytest.fixture(scope="module")
def smol_tok():
    return AutoTokenizer.from_pretrained(backbones.resolve("smollm2"))


@pytest.fixture(scope="module")
def minilm_tok():
    return AutoTokenizer.from_pretrained(backbones.resolve("minilm"))


def _is_chat(tok) -> bool:
    return bool(getattr(tok, "chat_template", None))


def _piece(tok, text: str) -> list[int]:
    """The ids `text` has inside a longer text where a space precedes it (BPE tokens carry the space)."""
    return tok((" " + text) if _is_chat(tok) else text, add_special_tokens=False)["input_ids"]


def _contains(ids: list[int], sub: list[int]) -> bool:
    return any(ids[i:i + len(sub)] == sub for i in range(len(ids) - len(sub) + 1))


def _words(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{chr(97 + i % 26)}{chr(97 + (i // 26) % 26)}" for i in range(n))


# --- templates ----------------------------------------------------------------------------------

def test_chat_template_for_the_decoder(smol_tok):
    fmt = Formatter(smol_tok, 512)
    assert fmt.chat
    text = fmt.text(PROMPT, COMPLETION)
    assert "<|im_start|>assistant" in text
    assert text.endswith(f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n{COMPLETION}<|im_end|>\n")
    # The chat text carries its own special tokens: no extra BOS/EOS is added when encoding.
    assert fmt.ids(text) == smol_tok(text, add_special_tokens=False)["input_ids"]
    # A chat prompt (list of messages) keeps its turns.
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": PROMPT}]
    text = fmt.text(msgs, COMPLETION)
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
                         f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n{COMPLETION}<|im_end|>\n")


def test_plain_template_for_the_encoder(minilm_tok):
    fmt = Formatter(minilm_tok, 512)
    assert not fmt.chat
    text = fmt.text(PROMPT, COMPLETION)
    assert text == f"User: {PROMPT}\n\nAssistant: {COMPLETION}"
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": PROMPT}]
    assert fmt.text(turns, COMPLETION) == f"User: Hi\n\nAssistant: Hello!\n\nUser: {PROMPT}\n\nAssistant: {COMPLETION}"
    assert "<|im_start|>" not in text
    ids = fmt.ids(text)
    assert ids[0] == minilm_tok.cls_token_id and ids[-1] == minilm_tok.sep_token_id


def test_critique_follows_the_completion(tok):
    fmt = Formatter(tok, 512)
    text = fmt.text(PROMPT, COMPLETION, CRITIQUE)
    # Exactly the baseline with the completion extended by the critique block.
    assert text == fmt.text(PROMPT, f"{COMPLETION}\n\nCritique: {CRITIQUE}")
    i_completion, i_label, i_critique = text.index(COMPLETION), text.index("Critique:"), text.index(CRITIQUE)
    assert i_completion + len(COMPLETION) <= i_label < i_critique
    assert text.index(PROMPT) < i_completion
    if _is_chat(tok):  # inside the assistant turn
        assert text.index("<|im_start|>assistant") < i_completion
        assert text.index("<|im_end|>", i_critique) == i_critique + len(CRITIQUE)


def test_without_critiques_text_is_the_no_critiques_baseline(tok):
    fmt = Formatter(tok, 512)
    assert "Critique" not in fmt.text(PROMPT, COMPLETION)
    assert fmt.text(PROMPT, COMPLETION, None) == fmt.text(PROMPT, COMPLETION)
    base = Pair(id="1", prompt=PROMPT, chosen=COMPLETION, rejected="London.")
    crit = Pair(id="1", prompt=PROMPT, chosen=COMPLETION, rejected="London.",
                chosen_critique=CRITIQUE, rejected_critique="Wrong: London is the capital of the UK.")
    half = Pair(id="1", prompt=PROMPT, chosen=COMPLETION, rejected="London.", chosen_critique=CRITIQUE)
    f_base, _ = fmt.encode_pairs([base], with_critiques=True)
    f_off, _ = fmt.encode_pairs([crit], with_critiques=False)
    f_half, _ = fmt.encode_pairs([half], with_critiques=True)  # only one side has a critique: none used
    f_on, _ = fmt.encode_pairs([crit], with_critiques=True)
    assert f_off == f_base == f_half
    assert f_on != f_base
    assert f_base[0]["chosen"] == fmt.ids(fmt.text(PROMPT, COMPLETION))
    assert f_on[0]["chosen"] == fmt.ids(fmt.text(PROMPT, COMPLETION, CRITIQUE))


# --- over-length policy -------------------------------------------------------------------------

def test_long_prompt_is_trimmed_first_from_the_left(tok):
    prompt = "promptstart " + _words("p", 60) + " promptend?"
    completion = "the answer is paris and nothing else"
    critique = "a fine critique of the answer"
    full = Formatter(tok, 10_000).encode(prompt, completion, critique)[0]
    short = Formatter(tok, 10_000).encode("promptend?", completion, critique)[0]
    max_length = (len(full) + len(short)) // 2
    fmt = Formatter(tok, max_length)
    ids, trimmed = fmt.encode(prompt, completion, critique)
    assert trimmed == ["prompt"]
    assert len(ids) <= max_length < len(full)
    assert _contains(ids, _piece(tok, completion.split(" ", 1)[1]))  # completion untouched
    assert tok.decode(ids).count(completion) == 1
    assert _contains(ids, _piece(tok, critique))  # critique untouched
    assert _contains(ids, _piece(tok, "promptend?"))  # the end of the prompt is kept
    assert not _contains(ids, _piece(tok, "promptstart"))  # its beginning went
    text = tok.decode(ids)
    assert "…" in text or "[UNK]" in text  # the trim is marked

    pair = Pair(id="1", prompt=prompt, chosen=completion, rejected="the answer is lyon",
                chosen_critique=critique, rejected_critique="wrong city")
    features, trims = fmt.encode_pairs([pair])
    assert trims == Counter({"prompt": 2})
    assert features[0]["chosen"] == ids


def test_long_completion_is_trimmed_from_the_left_after_the_prompt(tok):
    prompt = "promptstart " + _words("p", 10) + " promptend?"
    completion = "completionstart " + _words("c", 80) + " the final words completionend"
    critique = "critique text that must survive intact"
    max_length = 64
    fmt = Formatter(tok, max_length)
    ids, trimmed = fmt.encode(prompt, completion, critique)
    assert trimmed == ["prompt", "completion"]  # prompt first, then completion
    assert len(ids) <= max_length
    assert _contains(ids, _piece(tok, critique))  # the critique is kept whole
    assert _contains(ids, _piece(tok, "the final words completionend"))  # the end of the completion is kept
    assert not _contains(ids, _piece(tok, "completionstart"))
    assert not _contains(ids, _piece(tok, "promptstart"))  # the prompt was trimmed before the completion
    assert not _contains(ids, _piece(tok, _words("p", 10)))
    # The critique and the completion's end come last, in that order.
    crit_at = next(i for i in range(len(ids)) if ids[i:i + len(_piece(tok, critique))] == _piece(tok, critique))
    end_piece = _piece(tok, "completionend")
    end_at = next(i for i in range(len(ids)) if ids[i:i + len(end_piece)] == end_piece)
    assert end_at < crit_at

    pairs = [Pair(id="1", prompt=prompt, chosen=completion, rejected=completion + " extra",
                  chosen_critique=critique, rejected_critique=critique)]
    features, trims = fmt.encode_pairs(pairs)
    assert trims == Counter({"prompt": 2, "completion": 2})
    assert all(len(f[side]) <= max_length for f in features for side in ("chosen", "rejected"))


def test_critique_alone_overflowing_is_cut_from_the_right_and_counted(tok):
    critique = "critiquestart " + _words("k", 120)
    fmt = Formatter(tok, 48)
    ids, trimmed = fmt.encode("short prompt?", "short answer", critique)
    assert trimmed[-1] == "critique"  # cut last, after whatever of the prompt and completion could go
    assert len(ids) <= 48
    assert _contains(ids, _piece(tok, "critiquestart"))  # the critique keeps its start


def test_template_overflow_with_a_critique_terminates(tok):
    """When even the bare template does not fit, the critique cannot shrink below one token: encode
    must stop and keep the end (it used to loop forever re-trimming the critique to '…')."""
    template_only = len(Formatter(tok, 10_000).encode("q", "a", "c")[0])
    fmt = Formatter(tok, template_only - 3)
    ids, trimmed = fmt.encode("q?", "a", "critiquestart " + _words("k", 40))
    assert trimmed[-1] == "template"
    assert len(ids) == template_only - 3


def test_multi_turn_prompt_drops_earliest_turns_first(tok):
    early = [{"role": "user", "content": "zebraquestion " + _words("z", 30)},
             {"role": "assistant", "content": "zebraanswer " + _words("y", 30)}]
    last = [{"role": "user", "content": "What about pears?"}]
    completion = "pears are sweet"
    full, _ = Formatter(tok, 10_000).encode(early + last, completion)
    kept, _ = Formatter(tok, 10_000).encode(last, completion)
    max_length = len(kept) + 2
    assert max_length < len(full)
    ids, trimmed = Formatter(tok, max_length).encode(early + last, completion)
    assert trimmed == ["prompt"]
    assert ids == kept  # whole early turns dropped; the last turn is intact, not cut mid-text
    assert not _contains(ids, _piece(tok, "zebraquestion"))


def test_no_pair_is_dropped(tok):
    long = _words("l", 200)
    pairs = [
        Pair(id="short", prompt="hi?", chosen="hello", rejected="bye"),
        Pair(id="long-prompt", prompt=long, chosen="a", rejected="b"),
        Pair(id="long-completion", prompt="q?", chosen=long, rejected="b"),
        Pair(id="long-critique", prompt="q?", chosen="a", rejected="b", chosen_critique=long, rejected_critique="ok"),
        Pair(id="everything", prompt=long, chosen=long, rejected=long + " x", chosen_critique=long, rejected_critique=long),
        Pair(id="chat", prompt=[{"role": "user", "content": long}, {"role": "assistant", "content": long},
                                {"role": "user", "content": long}], chosen=long, rejected="no"),
    ]
    fmt = Formatter(tok, 48)
    features, trims = fmt.encode_pairs(pairs)
    assert len(features) == len(pairs)
    for f, p in zip(features, pairs):  # same order, each equal to encoding the pair alone
        use = p.has_critiques
        assert f["chosen"] == fmt.encode(p.prompt, p.chosen, p.chosen_critique if use else None)[0]
        assert f["rejected"] == fmt.encode(p.prompt, p.rejected, p.rejected_critique if use else None)[0]
        assert 0 < len(f["chosen"]) <= 48 and 0 < len(f["rejected"]) <= 48
    # Every part trimmed on every side that does not fit is counted; sides that fit are not.
    untrimmed = Formatter(tok, 10_000)
    sides = [(p.prompt, r, c if p.has_critiques else None)
             for p in pairs for r, c in ((p.chosen, p.chosen_critique), (p.rejected, p.rejected_critique))]
    over = sum(len(untrimmed.encode(*side)[0]) > 48 for side in sides)
    assert over == 8
    assert trims == Counter(part for side in sides for part in fmt.encode(*side)[1])
    assert sum(trims.values()) >= over


def test_no_real_pair_is_dropped(shared_data, smol_tok):
    loaded = load_jsonl(shared_data / "mix" / "train.jsonl")
    pairs = loaded.pairs[:60]
    fmt = Formatter(smol_tok, 128)
    features, trims = fmt.encode_pairs(pairs)
    assert len(features) == len(pairs)
    assert all(0 < len(f[s]) <= 128 for f in features for s in ("chosen", "rejected"))
    assert 0 < sum(trims.values()) <= 4 * 2 * len(pairs)
    assert set(trims) <= {"prompt", "completion", "critique", "template"}
