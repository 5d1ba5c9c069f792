"""The reward model: a pretrained backbone with a linear head that gives one scalar. Decoders read
their `score` head at the last real token of the attention mask, so any padding side and pad == EOS
read correctly (transformers#35352, trl#2778); encoders use their pooled output. A saved RM is a
plain one-label sequence classifier that transformers loads as is."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from . import atomic, backbones, card
from .backbones import quiet_transformers
from .errors import DataError
from .format import PLAIN_CHAT_TEMPLATE, Formatter
from .recipe import RECIPE_FILE, Recipe

PAD_TOKEN = "<|pad|>"


class RewardModel(nn.Module):
    def __init__(self, hf_model: nn.Module, tokenizer, peft_model=None, recipe: dict | None = None):
        super().__init__()
        self.hf = hf_model
        self.tokenizer = tokenizer
        self.peft_model = peft_model  # set when LoRA adapters are injected into hf
        self.is_decoder = hasattr(hf_model, "score")
        self.recipe = recipe  # how a saved critcore RM was trained (None for a fresh head or a foreign checkpoint)
        self.folder: Path | None = None  # the local folder it was saved to or loaded from

    @classmethod
    def load(cls, backbone: str, dropout: bool = False, lora: dict | None = None) -> "RewardModel":
        """Load `backbone` (alias, local dir, .gguf file or hub name) with a fresh one-scalar head,
        or a saved critcore RM with its trained head and its recipe."""
        path = backbones.resolve(backbone, "model")
        tok = backbones.from_pretrained(AutoTokenizer, path, "model")
        hf = backbones.from_pretrained(AutoModelForSequenceClassification, path, "model", num_labels=1,
                                       use_safetensors=True, dtype=torch.float32)
        _set_pad_token(hf, tok)
        if not dropout:
            _disable_dropout(hf)
        peft_model = None
        if lora:  # injected in place into hf; the head stays trainable
            from peft import LoraConfig, TaskType, get_peft_model

            peft_model = get_peft_model(hf, LoraConfig(
                task_type=TaskType.SEQ_CLS, r=lora.get("r", 16), lora_alpha=lora.get("alpha", 32),
                lora_dropout=lora.get("dropout", 0.0), target_modules=lora.get("target_modules", "all-linear")))
        rm = cls(hf, tok, peft_model, read_recipe(path))
        rm.folder = Path(path) if Path(path).is_dir() and rm.recipe is not None else None
        return rm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One reward per row."""
        if not self.is_decoder:
            return self.hf(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0]
        base = getattr(self.hf, self.hf.base_model_prefix)
        hidden = base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        last = (attention_mask.long() * positions).argmax(-1)  # rightmost real token
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.hf.score(pooled)[:, 0]

    def save(self, directory: str | os.PathLike, recipe: dict | None = None, weights: dict | None = None) -> Path:
        """Save as a plain transformers sequence classifier (safetensors, LoRA merged) with its
        tokenizer, the recipe (`recipe`, else its own) and a model card, atomically. `weights`: this
        RM's whole state dict, when its own parameters are shards (FSDP, DeepSpeed)."""
        directory = Path(directory)
        if weights is not None and self.peft_model is not None:
            raise ValueError("saving sharded LoRA weights is not supported: train LoRA without FSDP or DeepSpeed")
        model = self.hf if self.peft_model is None else copy.deepcopy(self.peft_model).merge_and_unload()
        recipe = recipe if recipe is not None else self.recipe
        state = None if weights is None else {k.removeprefix("hf."): v for k, v in weights.items() if k.startswith("hf.")}
        with atomic.atomic_dir(directory) as tmp, quiet_transformers():
            model.save_pretrained(tmp, safe_serialization=True, state_dict=state)
            self.tokenizer.save_pretrained(tmp)
            portable(tmp, self.tokenizer.model_input_names)
            if recipe is not None:
                atomic.write_json(tmp / RECIPE_FILE, recipe)
            # the card's name: the folder's, or for <run>/train/model the run's
            name = directory.name if directory.name != "model" else directory.resolve().parent.parent.name
            card.write(tmp, recipe, self.chat, name=name)
        self.recipe, self.folder = recipe, directory
        return directory

    @property
    def chat(self) -> bool:
        """Whether its tokenizer has a chat template of its own (not critcore's plain one)."""
        return Formatter(self.tokenizer, 1).chat

    def add_results(self, summary: dict) -> Path | None:
        """Put an evaluation's numbers (a summary.json) into the card of the folder this RM was saved
        to or loaded from; None when there is no such folder or card."""
        return card.add_results(self.folder, self.recipe, self.chat, summary) if self.folder else None


def portable(folder: Path, model_input_names: list[str] | None = None) -> None:
    """Make a saved checkpoint read the same way in transformers 4.x (RewardBench pins 4.51) as in
    5.x: config.json gets the legacy top-level rope_theta (4.x reads only that and would quietly
    use 10000), the tokenizer a class 4.x knows (not 5.x's TokenizersBackend) and its chat
    template in tokenizer_config.json (a tokenizer without one gets PLAIN_CHAT_TEMPLATE), and the
    tokenizer's input names (4.x's PreTrainedTokenizerFast would add token_type_ids, which a decoder
    refuses)."""
    config_file, tok_file = folder / "config.json", folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    rope = config.get("rope_parameters") or (config.get("text_config") or {}).get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope and "rope_theta" not in config:
        config["rope_theta"] = rope["rope_theta"]
        if rope.get("rope_type", "default") != "default":
            config["rope_scaling"] = rope
    atomic.write_json(config_file, config)
    if not tok_file.is_file():
        return
    tok = json.loads(tok_file.read_text())
    if tok.get("tokenizer_class") in ("TokenizersBackend", None):
        tok["tokenizer_class"] = "PreTrainedTokenizerFast"
    if model_input_names and "model_input_names" not in tok:
        tok["model_input_names"] = list(model_input_names)
    jinja = folder / "chat_template.jinja"
    if "chat_template" not in tok:
        tok["chat_template"] = jinja.read_text() if jinja.is_file() else PLAIN_CHAT_TEMPLATE
    atomic.write_json(tok_file, tok)


def read_recipe(path: str | os.PathLike) -> dict | None:
    """The recipe saved beside a critcore RM, or None (a backbone, a foreign checkpoint, a hub name)."""
    file = Path(path) / RECIPE_FILE
    try:
        recipe = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DataError(str(file), None, f"unreadable recipe ({e})") from None
    if not isinstance(recipe, dict):
        raise DataError(str(file), None, f"a recipe is a JSON object, got {type(recipe).__name__}")
    Recipe.check(recipe, str(file))
    return recipe


def _set_pad_token(hf, tok) -> None:
    """Pad on the right with a pad token distinct from EOS (SmolLM2 pads with its EOS)."""
    if tok.pad_token is None or (tok.eos_token is not None and tok.pad_token_id == tok.eos_token_id
                                 and hasattr(hf, "score")):
        tok.add_special_tokens({"pad_token": PAD_TOKEN})
        hf.resize_token_embeddings(len(tok), mean_resizing=True)
    tok.padding_side = "right"
    hf.config.pad_token_id = hf.config.get_text_config().pad_token_id = tok.pad_token_id


def _disable_dropout(hf) -> None:
    for module in hf.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    for key, value in hf.config.to_dict().items():
        if "dropout" in key and isinstance(value, float):
            setattr(hf.config, key, 0.0)
