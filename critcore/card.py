"""A saved RM's model card (huggingface_hub's ModelCard): the hub's metadata with a model-index
entry per evaluation set scored, the recipe, and how to score with transformers alone or with
critiques through critcore. `RewardModel.save` writes it; `add_results` adds an evaluation's numbers."""
from __future__ import annotations

import json
import os
from pathlib import Path

from . import atomic
from .format import PLAIN_CHAT_MARK, template
from .recipe import RECIPE_FILE

CARD_FILE = "README.md"
TAGS = ["reward-model", "critcore", "text-classification"]
HUB_NAMES = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct",
             "gemma3-270m": "google/gemma-3-270m"}  # the hub models the embedded aliases are (backbones.ALIASES)
SOURCE_DATASETS = {  # a pair's `source` -> the hub dataset it comes from, where there is one
    "hh-rlhf": "Anthropic/hh-rlhf", "ultrafeedback": "HuggingFaceH4/ultrafeedback_binarized",
    "rewardbench": "allenai/reward-bench",
}


def base_model(backbone: str | None) -> str | None:
    """The hub name a backbone is: an alias's model, a hub name as given; None for a local folder or file."""
    if not backbone:
        return None
    if backbone in HUB_NAMES:
        return HUB_NAMES[backbone]
    local = Path(backbone).expanduser().exists() or backbone.startswith(("/", ".", "~")) or backbone.endswith(".gguf")
    return None if local or backbone.count("/") != 1 else backbone


def _critic_line(critic) -> str:
    if critic is None:
        return "none (a No-Critiques RM: it reads prompt and response alone)"
    if not isinstance(critic, dict):
        return "unknown (no recipe)"
    return f"`{critic.get('identity')}` (config {critic.get('config')})"


def _recipe_table(recipe: dict | None) -> str:
    if recipe is None:
        return "No recipe: this checkpoint was saved without one.\n"
    cfg = recipe.get("train_config") or {}
    data = recipe.get("train_data") or {}
    templates = recipe.get("templates") or {}
    rows = [("backbone", f"`{recipe.get('backbone')}`"), ("critic", _critic_line(recipe.get("critic"))),
            ("templates (sha256, 16 hex)", ", ".join(f"{k} `{v}`" for k, v in templates.items()) or "-"),
            ("max_length", recipe.get("max_length")), ("over-length policy", f"`{recipe.get('over_length')}`"),
            ("learning rate", cfg.get("lr")), ("batch size", cfg.get("batch_size")), ("epochs", cfg.get("epochs")),
            ("margin", cfg.get("margin")), ("training pairs", data.get("pairs")), ("seed", cfg.get("seed")),
            ("critcore", recipe.get("critcore"))]
    return "| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def _usage(repo: str, recipe: dict | None, chat: bool) -> str:
    critic = (recipe or {}).get("critic")
    local = repo.rsplit("/", 1)[-1]
    download = f"hf download {repo} --local-dir {local}\n" if "/" in repo else ""
    response = ('critique = "..."  # the critique the critic above writes of this response\n'
                f'content = {template("rm_critique.txt")!r}.format(completion="4", critique=critique)\n'
                if critic else 'content = "4"\n')
    return template("card_usage.md").format(repo=repo, response=response, special=not chat, download=download,
                                            local=local, max_length=(recipe or {}).get("max_length", "max_length"))


def _results(summary: dict) -> list:
    """EvalResult entries for each evaluation set of a summary.json: overall accuracy, PandaLM's
    two tie policies, and section scores where the set has them."""
    from huggingface_hub import EvalResult

    out = []
    for name, s in summary.items():
        if not isinstance(s, dict) or not isinstance(s.get("overall"), dict):
            continue  # eval_key, train, critic, ...: not an evaluation set
        metrics = [("accuracy", "accuracy", s["overall"].get("acc"))]
        for policy, m in (s.get("pandalm") or {}).items():
            metrics.append(("accuracy", f"accuracy (ties {'dropped' if policy == 'drop' else 'counted wrong'})",
                            (m or {}).get("acc")))
        for section, m in (s.get("sections") or {}).items():
            if isinstance(m, dict):
                metrics.append(("accuracy", f"{section} accuracy", m.get("acc")))
        for kind, label, value in metrics:
            if value is not None:
                out.append(EvalResult(task_type="text-classification", task_name="Reward modeling",
                                      dataset_type=name, dataset_name=name, metric_type=kind,
                                      metric_name=label, metric_value=round(float(value), 4)))
    return out


def build(name: str, recipe: dict | None, chat: bool, results: list | None = None, repo: str | None = None):
    """The card (a huggingface_hub ModelCard) of an RM named `name` (repo: where it will be read from)."""
    from huggingface_hub import ModelCard, ModelCardData

    backbone = (recipe or {}).get("backbone")
    sources = ((recipe or {}).get("train_data") or {}).get("sources") or []
    datasets = sorted({SOURCE_DATASETS[s] for s in sources if s in SOURCE_DATASETS})
    data = ModelCardData(base_model=base_model(backbone), library_name="transformers", tags=list(TAGS),
                         pipeline_tag="text-classification", datasets=datasets or None,
                         model_name=name, eval_results=results or None)
    critic = (recipe or {}).get("critic")
    what = ("reads `prompt, response : critique`, the critique written by the critic below"
            if critic else "reads prompt and response (trained without critiques)")
    body = (f"# {name}\n\nA reward model trained with critcore, after Ye et al. 2024, "
            f"*Improving Reward Models with Synthetic Critiques*. It {what}, and gives one scalar: the reward.\n\n"
            f"## Recipe\n\n{_recipe_table(recipe)}\n{_results_table(results or [])}{_usage(repo or name, recipe, chat)}")
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _results_table(results: list) -> str:
    if not results:
        return "## Evaluation\n\nNot evaluated yet: `critcore evaluate` adds its numbers here.\n\n"
    rows = "".join(f"| {r.dataset_name} | {r.metric_name} | {r.metric_value} |\n" for r in results)
    return f"## Evaluation\n\n| set | metric | value |\n|---|---|---|\n{rows}\n"


def write(folder: str | os.PathLike, recipe: dict | None, chat: bool, results: list | None = None,
          name: str | None = None, repo: str | None = None) -> Path:
    """Write README.md into a saved RM's folder, atomically; `name`: the model's (default: the
    folder's); `repo`: the hub repo its usage loads from (default: the name)."""
    folder = Path(folder)
    card = build(name or folder.name, recipe, chat, results, repo)
    atomic.write_text(folder / CARD_FILE, str(card))
    return folder / CARD_FILE


def add_results(folder: str | os.PathLike, recipe: dict | None, chat: bool, summary: dict,
                repo: str | None = None) -> Path | None:
    """The card of the RM in `folder` with the results of `summary` (a summary.json): an entry per
    set and metric, replacing the entries of the sets it scores again. None for a folder without a card."""
    from huggingface_hub import ModelCard

    path = Path(folder) / CARD_FILE
    if not path.is_file():
        return None
    new = _results(summary)
    again = {r.dataset_name for r in new}
    data = ModelCard.load(path).data
    old = [r for r in (data.eval_results or []) if r.dataset_name not in again]
    return write(folder, recipe, chat, old + new, name=data.model_name, repo=repo)


TOKEN_ENV = "HF_TOKEN"  # where --push-to-hub takes its token from; it is never written anywhere


def hub_token(repo: str) -> str:
    """The token for pushing to `repo`, from $HF_TOKEN; a ConfigError without one (checked before any work)."""
    from .errors import ConfigError

    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ConfigError(f"push_to_hub {repo!r}: set ${TOKEN_ENV} to a Hugging Face token with write access "
                          "(it is read from the environment only, never written)")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ConfigError(f"push_to_hub {repo!r}: expected a hub repo name, owner/name")
    return token


def push(folder: str | os.PathLike, repo: str, api=None) -> str:
    """Upload a saved RM's folder (weights, tokenizer, recipe, card) to the hub model repo `repo`,
    created if it is missing, with the token from $HF_TOKEN; `api`: a huggingface_hub HfApi (tests
    give a stub). Returns the commit's URL."""
    token = hub_token(repo)
    folder = Path(folder)
    recipe_file, tok_file = folder / RECIPE_FILE, folder / "tokenizer_config.json"
    recipe = json.loads(recipe_file.read_text(encoding="utf-8")) if recipe_file.is_file() else None
    chat_template = json.loads(tok_file.read_text(encoding="utf-8")).get("chat_template") if tok_file.is_file() else None
    chat = bool(chat_template) and not str(chat_template).startswith(PLAIN_CHAT_MARK)
    add_results(folder, recipe, chat, {}, repo=repo)  # the card's usage loads from the repo
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    api.create_repo(repo, token=token, repo_type="model", exist_ok=True)
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="model", token=token,
                               commit_message="critcore: reward model, recipe and card")
    return str(getattr(commit, "commit_url", commit))
