"""What the reward-model studies share: their critics and backbones read from the typed
configuration, and critiquing every split once per critic."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..params import BackboneSpec, backbone_label
from ..critique import parse_critic_spec
from ..report import slug
from ..run import Run
from ..splits import Splits, critique_splits


def critic_label(spec) -> str:
    """A short name for a critic spec: none, smollm2, simulated-0.9, the model of a mapping."""
    d = parse_critic_spec(spec) if not hasattr(spec, "identity") else {"backend": "x", "model": spec.identity}
    if d is None:
        return "none"
    if d["backend"] == "simulated":
        return slug(f"simulated-{d['p']:g}")
    return slug(str(d.get("model", d["backend"])).split("/")[-1])


def is_baseline(spec) -> bool:
    return critic_label(spec) == "none"


def simulated_p(spec) -> float | None:
    """The accuracy p of a simulated critic's spec, else None."""
    d = parse_critic_spec(spec)
    return float(d["p"]) if d and d["backend"] == "simulated" else None


def critics_of(cfg) -> dict[str, Any]:
    """{name: spec}: a study's `critics`, or the quickstart's single `critic` after No-Critiques."""
    if hasattr(cfg, "critics"):
        return dict(cfg.critics)
    return {"none": "none"} if is_baseline(cfg.critic) else {"none": "none", critic_label(cfg.critic): cfg.critic}


@dataclass
class Backbone:
    name: str  # label, used in folder names and tables
    backbone: str  # what TrainConfig.backbone gets
    n_train: int | None = None
    n_eval: int | None = None
    critics: list[str] | None = None
    train: dict = field(default_factory=dict)
    lr_sweep: list[float] | None = None  # the rates to sweep, its own or the study's; None: no sweep
    seeds: list = field(default_factory=lambda: [None])  # its own or the study's; [None]: train.seed only

    @property
    def seed_in_name(self) -> bool:
        """Whether its RM folders name the seed (critcore.rms.folder_name): when it has several."""
        return len(self.seeds) > 1


def backbones_of(cfg) -> list[Backbone]:
    """The backbones of a study: RQ1's `backbones` (names or BackboneSpec), else its `backbone`,
    each with its learning-rate sweep and seeds resolved against the study's."""
    raw = cfg.backbones if hasattr(cfg, "backbones") else [cfg.backbone]
    study_lrs, study_seeds = getattr(cfg, "lr_sweep", None), getattr(cfg, "seeds", None)
    out = []
    for b in raw:
        if isinstance(b, BackboneSpec):
            spec = b.backbone or b.name
            lrs = study_lrs if b.lr_sweep is None else b.lr_sweep
            out.append(Backbone(backbone_label(b), spec, b.n_train, b.n_eval, b.critics, dict(b.train),
                                lrs or None, b.seeds or study_seeds or [None]))
        else:
            out.append(Backbone(backbone_label(b), b, lr_sweep=study_lrs or None, seeds=study_seeds or [None]))
    return out


def critique_all(run: Run, splits: Splits) -> dict[str, tuple[Splits, Any]]:
    """Critique every split once with each critic a backbone uses (run.critique_splits)."""
    critics = critics_of(run.config)
    used = {c for b in backbones_of(run.config) for c in (b.critics or critics)}
    return critique_splits(run, splits, {k: v for k, v in critics.items() if k in used})
