"""Saved reward models load elsewhere as they load here: TRL's reward-model path and the texts
RewardBench feeds give critcore's own rewards, and the checkpoint carries what transformers 4.x
needs (legacy rope_theta, a tokenizer class it knows, a chat template)."""
from __future__ import annotations

import json

import pytest
import torch

from critcore.data import Pair
from critcore.evaluate import score_pairs
from critcore.format import Formatter

PAIRS = [Pair(id=f"p{i}", prompt=q, chosen=a, rejected=b) for i, (q, a, b) in enumerate([
    ("What is the capital of France?", "Paris.", "Lyon, I think."),
    ("Write a haiku about rain.", "Soft rain on the roof\nwhispers to the sleeping town\nmorning comes washed clean",
     "Rain is wet."),
    ("How do I reverse a list in Python?", "Use reversed(xs) or xs[::-1].", "You cannot."),
])]


@pytest.fixture(scope="module", params=["minilm", "smollm2"])
def saved(request, tmp_path_factory):
    from transformers import set_seed

    from critcore.model import RewardModel

    set_seed(0)
    rm = RewardModel.load(request.param)
    with torch.no_grad():  # a head that is not ~0 everywhere, so differences would show
        head = rm.hf.score if rm.is_decoder else rm.hf.classifier
        head.weight.normal_(0, 0.5)
    folder = tmp_path_factory.mktemp(request.param) / "rm"
    rm.save(folder)
    return request.param, folder, score_pairs(rm, PAIRS, max_length=256)


def test_checkpoint_carries_what_transformers_4_needs(saved):
    name, folder, _ = saved
    config = json.loads((folder / "config.json").read_text())
    tok = json.loads((folder / "tokenizer_config.json").read_text())
    assert tok["tokenizer_class"] in ("BertTokenizer", "PreTrainedTokenizerFast")  # not 5.x's TokenizersBackend
    assert tok["chat_template"]
    if name == "smollm2":
        assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 100000.0
        # 4.x's PreTrainedTokenizerFast would otherwise add token_type_ids, which a Llama refuses
        assert tok["model_input_names"] == ["input_ids", "attention_mask"]


def test_trl_loads_the_rm_and_gets_the_same_rewards(saved):
    """TRL 1.16 (GRPO/RLOO reward_funcs given as a path) loads the RM with
    AutoModelForSequenceClassification(num_labels=1) and its tokenizer; on critcore's token ids
    its logits are critcore's rewards."""
    pytest.importorskip("trl")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer


    name, folder, ours = saved
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    fmt = Formatter(tok, 256)  # the exported plain template is recognized: critcore's own text
    for pair, row in zip(PAIRS, ours.itertuples()):
        for response, want in ((pair.chosen, row.score_chosen), (pair.rejected, row.score_rejected)):
            ids, _ = fmt.encode(pair.prompt, response)
            with torch.inference_mode():
                got = model(input_ids=torch.tensor([ids])).logits[0, 0].item()
            assert got == pytest.approx(want, abs=1e-4)


def test_the_exported_chat_template_writes_critcores_text(saved):
    """RewardBench renders [user, assistant] messages with the tokenizer's chat template and
    tokenizes the text as a text classifier does; for both RMs that gives critcore's rewards."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    name, folder, ours = saved
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    for pair, row in zip(PAIRS, ours.itertuples()):
        messages = [{"role": "user", "content": pair.prompt}, {"role": "assistant", "content": pair.chosen}]
        text = tok.apply_chat_template(messages, tokenize=False)
        if name == "minilm":
            assert text == f"User: {pair.prompt}\n\nAssistant: {pair.chosen}"  # templates/rm_plain.txt
        enc = tok(text, return_tensors="pt", add_special_tokens=name == "minilm")  # a chat template carries its own
        with torch.inference_mode():
            assert model(**enc).logits[0, 0].item() == pytest.approx(row.score_chosen, abs=1e-4)
    from critcore.model import RewardModel

    assert Formatter(RewardModel.load(str(folder)).tokenizer, 256).chat == (name == "smollm2")  # critcore reads it back


@pytest.mark.slow
def test_rewardbench_0_1_4_gives_critcores_rewards(shared_data, tmp_path):
    """RewardBench 0.1.4's own CLI, in an isolated venv with its pinned transformers 4.51
    (scripts/rewardbench/check.sh builds it on first use, from PyPI; $RB_VENV names another), on
    saved MiniLM and SmolLM2 RMs over 30 mix pairs within the length limit: rewards match
    critcore's to 1e-4 of the largest reward, except MiniLM at a batch RewardBench pads on the left
    (reported, expected)."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "RB_OUT": str(tmp_path)}
    res = subprocess.run([str(root / "scripts/rewardbench/check.sh"), "30"], capture_output=True, text=True, env=env)
    print(res.stdout[-3000:])
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    report = json.loads((tmp_path / "rewardbench_check.json").read_text())
    assert set(report) == {"minilm-b1", "minilm-b8", "smollm2-b8"}
    for run in ("minilm-b1", "smollm2-b8"):
        r = report[run]
        assert r["pairs"] == 30 and r["match"] and r["same_winner"] == 1.0
        assert r["max_abs_diff"] <= 1e-4 * max(1.0, r["largest_reward"])
        assert report[run]["largest_reward"] > 0.5  # a head far from 0, so a misread input would show
