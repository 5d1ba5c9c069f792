"""The reward model on the real embedded backbones: where the reward is read, save/load through plain
transformers (and the acceptance check), LoRA checkpoints, and batch-size-independent scores."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed

from critcore.data import Pair
from critcore.evaluate import score_pairs, score_texts
from critcore.format import Formatter
from critcore.model import PAD_TOKEN, RewardModel
from critcore.train import TrainConfig, train

ACCEPTANCE = Path(__file__).resolve().parents[1].parent / "shared" / "acceptance" / "check_saved_rm.py"


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


@pytest.fixture(params=["minilm", "smollm2"])
def rm(request):
    return request.getfixturevalue(f"rm_{request.param}")


def _batch(seqs: list[list[int]], pad: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad by hand, on the right or on the left."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        at = slice(0, len(s)) if side == "right" else slice(width - len(s), width)
        ids[i, at] = torch.tensor(s)
        mask[i, at] = 1
    return ids, mask


@torch.no_grad()
def _alone(rm, seq: list[int]) -> float:
    return rm(torch.tensor([seq]), torch.ones(1, len(seq), dtype=torch.long)).item()


# --- 1. the reward is read at the last real token -------------------------------------------------

@torch.no_grad()
def test_decoder_reward_is_read_at_the_last_real_token(rm_smollm2):
    rm, tok = rm_smollm2, rm_smollm2.tokenizer
    eos = tok.eos_token_id
    assert tok.pad_token == PAD_TOKEN and tok.pad_token_id != eos  # critcore's distinct pad
    assert rm.hf.config.pad_token_id == tok.pad_token_id
    fmt = Formatter(tok, 128)
    seqs = [
        fmt.ids(fmt.text("What is 2 + 2?", "4")),  # a chat text
        tok("Hello there, how are you today", add_special_tokens=False)["input_ids"] + [eos],  # ends in EOS
        tok("Short", add_special_tokens=False)["input_ids"],
        tok("A middle <|im_end|> in the text and then more words", add_special_tokens=False)["input_ids"],
    ]
    assert seqs[1][-1] == eos and eos in seqs[3][:-1]
    alone = torch.tensor([_alone(rm, s) for s in seqs])
    right = rm(*_batch(seqs, tok.pad_token_id, "right"))
    left = rm(*_batch(seqs, tok.pad_token_id, "left"))
    torch.testing.assert_close(right, alone, atol=1e-4, rtol=0)
    torch.testing.assert_close(left, alone, atol=1e-4, rtol=0)
    # Left padding with EOS as the pad id changes nothing for critcore: it reads the attention mask.
    torch.testing.assert_close(rm(*_batch(seqs, eos, "left")), alone, atol=1e-4, rtol=0)
    torch.testing.assert_close(rm(*_batch(seqs, eos, "right")), alone, atol=1e-4, rtol=0)

    # The reward of the EOS-ending text is the head applied at the EOS position itself.
    ends_in_eos = torch.tensor([seqs[1]])
    hidden = rm.hf.model(input_ids=ends_in_eos).last_hidden_state
    at_eos, before_eos = rm.hf.score(hidden[:, -1]).item(), rm.hf.score(hidden[:, -2]).item()
    assert alone[1].item() == pytest.approx(at_eos, abs=1e-5)
    assert abs(at_eos - before_eos) > 1e-3  # the two readings are distinguishable

    # HF's own reading finds the last token that is not pad_token_id. With the tokenizer's default
    # pad (EOS) it skips the final EOS and reads the token before it: the wrong reward.
    saved = rm.hf.config.pad_token_id
    try:
        rm.hf.config.pad_token_id = eos
        hf_eos_alone = rm.hf(input_ids=ends_in_eos).logits[0, 0].item()
        ids, mask = _batch(seqs, eos, "right")
        hf_eos_batch = rm.hf(input_ids=ids, attention_mask=mask).logits[:, 0]
    finally:
        rm.hf.config.pad_token_id = saved
    assert hf_eos_alone == pytest.approx(before_eos, abs=1e-5)
    assert abs(hf_eos_alone - alone[1].item()) > 1e-3
    assert abs(hf_eos_batch[1].item() - alone[1].item()) > 1e-3
    # With critcore's distinct pad, HF's reading agrees with critcore's, padded either side.
    for side in ("right", "left"):
        ids, mask = _batch(seqs, tok.pad_token_id, side)
        torch.testing.assert_close(rm.hf(input_ids=ids, attention_mask=mask).logits[:, 0], alone, atol=1e-4, rtol=0)


@torch.no_grad()
def test_encoder_reward_alone_equals_right_padded_batch(rm_minilm):
    rm, tok = rm_minilm, rm_minilm.tokenizer
    fmt = Formatter(tok, 128)
    texts = [("What is 2 + 2?", "4"), ("Tell me a story.", "Once upon a time there was a very long story " * 4),
             ("Hi", "Hello! How can I help you today?")]
    seqs = [fmt.ids(fmt.text(p, c)) for p, c in texts]
    assert len({len(s) for s in seqs}) == 3
    alone = torch.tensor([_alone(rm, s) for s in seqs])
    right = rm(*_batch(seqs, tok.pad_token_id, "right"))
    torch.testing.assert_close(right, alone, atol=1e-4, rtol=0)
    assert alone.std() > 1e-4  # distinct texts, distinct scores: the comparison means something


# --- 2. save / load through plain transformers -------------------------------------------------

def _texts(fmt: Formatter) -> list[str]:
    return [fmt.text("What is 2 + 2?", "4"), fmt.text("Write a haiku about rain.", "Rain taps on the roof " * 3),
            fmt.text("Hi", "Hello! How can I help?", "A friendly, fitting reply.")]


def test_saved_rm_loads_in_plain_transformers(rm, tmp_path):
    out = rm.save(tmp_path / "rm")
    files = sorted(p.name for p in out.iterdir())
    assert "model.safetensors" in files and "config.json" in files
    assert not [f for f in files if f.endswith(".bin") or f.endswith(".pt")]
    assert not list(tmp_path.glob(".rm.*"))  # no temporary directory left behind

    tok = AutoTokenizer.from_pretrained(out)
    hf = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert hf.config.num_labels == 1
    assert next(hf.parameters()).dtype == torch.float32
    assert tok.padding_side == "right"
    if rm.is_decoder:
        assert tok.pad_token == PAD_TOKEN and tok.pad_token_id != tok.eos_token_id
        assert hf.config.pad_token_id == tok.pad_token_id

    fmt = Formatter(rm.tokenizer, 256)
    texts = _texts(fmt)
    ours = torch.tensor(score_texts(rm, [fmt.ids(t) for t in texts], batch_size=4))
    add_special = not fmt.chat
    with torch.no_grad():
        alone = torch.tensor([hf(**tok([t], return_tensors="pt", add_special_tokens=add_special)).logits.item()
                              for t in texts])
        batch = hf(**tok(texts, return_tensors="pt", padding=True, add_special_tokens=add_special)).logits[:, 0]
        tok.padding_side = "left"
        left = hf(**tok(texts, return_tensors="pt", padding=True, add_special_tokens=add_special)).logits[:, 0]
    torch.testing.assert_close(alone, ours, atol=1e-5, rtol=0)
    torch.testing.assert_close(batch, ours, atol=1e-5, rtol=0)
    if rm.is_decoder:  # a decoder's reward does not depend on the padding side either
        torch.testing.assert_close(left, ours, atol=1e-4, rtol=0)

    # Loading the saved RM back into critcore keeps the head and the pad token (no second <|pad|>).
    again = RewardModel.load(str(out))
    assert again.tokenizer.pad_token_id == rm.tokenizer.pad_token_id
    assert len(again.tokenizer) == len(rm.tokenizer)
    torch.testing.assert_close(torch.tensor(score_texts(again, [fmt.ids(texts[0])])), ours[:1], atol=1e-5, rtol=0)
    del again, hf

    if not ACCEPTANCE.is_file():
        pytest.skip(f"acceptance check not found at {ACCEPTANCE}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ACCEPTANCE), str(out)], capture_output=True, text=True, timeout=600,
                          env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok:")


# --- LoRA: the head and the merged adapters are in the checkpoint -------------------------------

_LORA = {"r": 4, "alpha": 8}


@pytest.mark.parametrize("backbone", ["minilm", "smollm2"])
def test_lora_checkpoint_holds_trained_head_and_merged_weights(backbone, tmp_path):
    n = 8 if backbone == "minilm" else 1  # pairs per step; two steps
    pairs = [Pair(id=str(i), prompt=f"Colour {i}?", chosen=f"Blue {i}.", rejected=f"No idea {i}.")
             for i in range(2 * n)]
    cfg = TrainConfig(backbone=backbone, lr=1e-3, batch_size=n, micro_batch_size=n, max_length=48, lora=_LORA,
                      warmup_ratio=0.0)
    result = train(cfg, pairs, out_dir=tmp_path / "run", progress=False)
    assert result.summary["steps"] == 2
    trained = result.model
    assert trained.peft_model is not None
    head_name = "score" if trained.is_decoder else "classifier"
    wrapper = getattr(trained.hf, head_name)
    trained_head = wrapper.modules_to_save["default"].weight.detach()

    saved_dir = tmp_path / "run" / "model"
    state = load_file(saved_dir / "model.safetensors")
    assert not [k for k in state if "lora_" in k or "modules_to_save" in k or "original_module" in k
                or k.startswith("base_model.")]
    assert not list(saved_dir.glob("adapter_*"))
    # The head in the checkpoint is the trained one, not the fresh initialisation.
    set_seed(cfg.seed)
    fresh = RewardModel.load(backbone)
    fresh_head = getattr(fresh.hf, head_name).weight.detach()
    torch.testing.assert_close(wrapper.original_module.weight.detach(), fresh_head)  # same init as the run's
    torch.testing.assert_close(state[f"{head_name}.weight"], trained_head)
    assert (state[f"{head_name}.weight"] - fresh_head).abs().max() > 1e-5

    # A LoRA-adapted linear is saved merged: W0 + scale * B @ A, which differs from the backbone's W0.
    if trained.is_decoder:
        key, layer = "model.layers.0.self_attn.q_proj.weight", trained.hf.model.layers[0].self_attn.q_proj
    else:
        key, layer = "bert.encoder.layer.0.attention.self.query.weight", trained.hf.bert.encoder.layer[0].attention.self.query
    w0 = layer.base_layer.weight.detach()
    delta = (layer.lora_B["default"].weight @ layer.lora_A["default"].weight).detach() * layer.scaling["default"]
    assert delta.abs().max() > 1e-6
    torch.testing.assert_close(state[key], w0 + delta, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(w0, fresh.state_dict()[f"hf.{key}"])  # the base weights were frozen
    assert (state[key] - w0).abs().max() > 1e-6

    # Plain transformers reproduces the in-memory (unmerged) LoRA model's scores.
    hf = AutoModelForSequenceClassification.from_pretrained(saved_dir).eval()
    assert hf.config.num_labels == 1
    df = score_pairs(trained, pairs, max_length=48)
    fmt = Formatter(AutoTokenizer.from_pretrained(saved_dir), 48)
    with torch.no_grad():
        plain = [hf(input_ids=torch.tensor([fmt.encode(p.prompt, p.chosen)[0]])).logits.item() for p in pairs]
    torch.testing.assert_close(torch.tensor(plain), torch.tensor(df.score_chosen.tolist()), atol=1e-5, rtol=0)
    if trained.is_decoder:
        return
    # The reloaded finished run is the saved one.
    again = train(cfg, pairs, out_dir=tmp_path / "run", progress=False)
    assert again.summary == result.summary
    torch.testing.assert_close(torch.tensor(score_pairs(again.model, pairs, max_length=48).score_chosen.tolist()),
                               torch.tensor(df.score_chosen.tolist()), atol=1e-5, rtol=0)


# --- 3. scores do not depend on the batch size ---------------------------------------------------

def _varied_pairs(n: int) -> list[Pair]:
    out = []
    for i in range(n):
        out.append(Pair(id=str(i), prompt="Question number %d: %s?" % (i, "why " * (i % 5)),
                        chosen="Because " + "it is so " * (1 + 3 * (i % 4)), rejected="No" + "." * (i % 3),
                        chosen_critique="Good." if i % 2 else None, rejected_critique="Bad." if i % 2 else None))
    return out


def test_scores_do_not_depend_on_batch_size(rm):
    pairs = _varied_pairs(10 if not rm.is_decoder else 3)
    # half the pairs carry critiques (the formatting of both kinds is batched together), so the
    # No-Critiques RM scores them with the recipe check's opt-out
    score = lambda bs: score_pairs(rm, pairs, max_length=48, batch_size=bs, allow_critic_mismatch=True)  # noqa: E731
    frames = {bs: score(bs) for bs in (1, 3, 16)}
    cols = ["score_chosen", "score_rejected"]
    base = torch.tensor(frames[1][cols].to_numpy())
    assert base.std() > 1e-4
    for bs in (3, 16):
        torch.testing.assert_close(torch.tensor(frames[bs][cols].to_numpy()), base, atol=1e-4, rtol=0)
    assert frames[1]["id"].tolist() == [p.id for p in pairs]  # rows stay in the input order
    rerun = score(16)
    assert rerun[cols].equals(frames[16][cols])  # a rerun gives the very same numbers
