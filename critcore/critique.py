"""Synthetic critiques (Ye et al. 2024): the cache-backed `augment`, and the checks that train
and test pairs, and a reward model and its test pairs, were critiqued alike.

A critic (critcore.critics) is a model backend with a critique template: `identity` and `params`
(part of every cache key), `template`, and `stream(items, labels)` for items
`(prompt_text, response)`. Three backends are registered: `local` (a local model, default
SmolLM2-135M-Instruct, on transformers or CTranslate2), `openai` (any OpenAI-compatible
`/v1/chat/completions` server) and `simulated` (no model: a labelled simulation with accuracy p,
for dose-response).
"""
from __future__ import annotations

import os
from dataclasses import replace

from .critics import (CRITIC_FORMS, Critic, LocalCritic, OpenAICritic, SimulatedCritic,  # noqa: F401 - the API
                      make_critic, model_backend, parse_critic_spec)
from .data import pairs_of
from .errors import CriticError, CriticMismatchError  # noqa: F401 - CriticError is part of this API
from .llm import CritiqueCache, Failure, cached
from .llm.cache import open_cache
from .recipe import say, trained_critic
from .records import Pair, prompt_text


def critic_for_model(recipe: dict | None, requested=None, options=None, allow_mismatch: bool = False):
    """The critic to score a reward model's test pairs with: `requested` (a spec; None = the one in
    the model's recipe). Returns (critic or None, what the recipe says: a dict, None for a
    No-Critiques RM, or "unknown" for a checkpoint without a recipe).

    A requested critic other than the recipe's, or none for a critique RM, is a
    CriticMismatchError naming both, unless allow_mismatch. A recipe whose critiques came with
    the training data (no spec to rebuild the critic from) needs `requested` or test pairs that
    carry the same critiques (critcore.recipe.check_recipe, which scoring applies)."""
    expected = trained_critic(recipe)
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
                f"the model was trained {say(expected)}, but it would be scored {say(got)}; "
                "pass --allow-critic-mismatch (allow_critic_mismatch: true) for a cross-critic experiment")
    return critic, expected


# ---------------------------------------------------------------- augmentation


def critique_texts(critic: Critic, items: list[tuple[str, str, bool | None]], cache: CritiqueCache,
                   progress: bool = True, on_error: str = "fail") -> list:
    """Critiques of (prompt text, response, label) items through the cache (critcore.llm.cached):
    cached ones are reused, identical items generated once, the rest stream from the critic,
    longest first, committed as they finish (under a launcher, split between the processes for a
    local model, from the main process for a server). With on_error="skip", an item the critic can
    never answer comes back as its Failure (with the reason, the key masked)."""
    keys = [critic.key(text, response, label) for text, response, label in items]

    def generate(todo):
        labels = [label for _, _, label in todo] if critic.needs_labels else None
        return critic.stream([(text, response) for text, response, _ in todo], labels)

    return cached(cache, keys, items, generate, critic.identity, critic.batch_size,
                  f"critiques ({critic.identity})", progress, on_error, getattr(critic.backend, "shards", True))


def augment(pairs: list[Pair], critic, cache: CritiqueCache | str | os.PathLike | None = None,
            progress: bool = True, on_error: str = "fail") -> list[Pair]:
    """The pairs with chosen_critique / rejected_critique filled and meta["critic"] set.

    `pairs`: a list of pairs, or anything critcore.data.load takes (a Dataset, a DataFrame, a data
    spec). `critic` is a Critic or a spec for make_critic; "none" clears critiques. `cache` is a
    CritiqueCache, a path to one, or None (in memory); see critique_texts. With on_error="skip",
    a pair whose critique failed is kept without critiques, with the reason in
    meta["critique_failed"] (drop_failed leaves those out)."""
    pairs = pairs_of(pairs)
    critic = make_critic(critic)
    if critic is None:
        return [replace(p, chosen_critique=None, rejected_critique=None,
                        meta={**{k: v for k, v in p.meta.items() if k != "critic_config"}, "critic": "none"})
                for p in pairs]
    with open_cache(cache) as store:
        items = [(prompt_text(p.prompt), response, label) for p in pairs
                 for response, label in ((p.chosen, True), (p.rejected, False))]
        texts = critique_texts(critic, items, store, progress, on_error)
    tag = {"critic": critic.identity, "critic_config": critic.config_hash}
    out = []
    for i, p in enumerate(pairs):
        c, r = texts[2 * i], texts[2 * i + 1]
        failed = [f"{side}: {t.reason}" for side, t in (("chosen", c), ("rejected", r)) if isinstance(t, Failure)]
        if failed:
            out.append(replace(p, chosen_critique=None, rejected_critique=None,
                               meta={**p.meta, "critique_failed": "; ".join(failed)}))
        else:
            out.append(replace(p, chosen_critique=c, rejected_critique=r, meta={**p.meta, **tag}))
    return out


def drop_failed(pairs: list[Pair]) -> tuple[list[Pair], list[dict]]:
    """The pairs whose critiques did not fail, and the id and reason of each pair left out."""
    kept = [p for p in pairs if not p.meta.get("critique_failed")]
    return kept, [{"id": p.id, "reason": str(p.meta["critique_failed"])} for p in pairs if p.meta.get("critique_failed")]


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
