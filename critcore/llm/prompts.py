"""Prompt templates, as text files: the critique templates (critcore/templates/critique_*.txt)
and the judge and metacritique prompts (critcore/prompts/*.txt), and one filler for all of them."""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import UserError

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
DEFAULT_MAX_CHARS = 4000  # per filled-in text: the prompt keeps its end, every other text its start


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
    raise UserError(f"no {kind} {spec!r}: give a file path or one of {names}")


def load_template(template: str | os.PathLike | None = None) -> str:
    """A critique template from None (the paper's), a name in critcore/templates ("paper" ->
    critique_paper.txt), a file path, or the template text itself (containing {response})."""
    t = "paper" if template is None else str(template)
    text = read_named_text(t, TEMPLATES, "critique_", "{response}", "critique template")
    if "{prompt}" not in text or "{response}" not in text:
        raise UserError(f"critique template {t!r} must contain both {{prompt}} and {{response}}")
    return text


def load_prompt(spec: str | os.PathLike | None, default: str, required: tuple[str, ...] = ()) -> str:
    """A prompt template from None (the `default` name), a name in critcore/prompts
    ("judge_direct" or "judge_direct.txt"), a file path, or the template text itself (anything
    containing "{"). Every name in `required` must appear in it as {name}."""
    spec = default if spec is None else str(spec)
    text = read_named_text(spec, PROMPTS, kind="prompt template")
    missing = [f"{{{name}}}" for name in required if f"{{{name}}}" not in text]
    if missing:
        raise UserError(f"prompt template {spec[:60]!r} lacks {', '.join(missing)}")
    return text


def fill(template: str, values: dict[str, str], max_chars: int | None = DEFAULT_MAX_CHARS) -> str:
    """Fill {name} fields in one pass (braces inside the values are left alone). Texts are
    stripped, and those over `max_chars` are cut: "prompt" keeps its end (the latest turn), every
    other field its start."""
    cut = {}
    for name, text in values.items():
        text = (text or "").strip()
        if max_chars and len(text) > max_chars:
            text = "…" + text[-max_chars:] if name == "prompt" else text[:max_chars] + "…"
        cut[name] = text
    pattern = r"\{(" + "|".join(re.escape(k) for k in cut) + r")\}"
    return re.sub(pattern, lambda m: cut[m.group(1)], template).strip()


def render(template: str, prompt: str, response: str, max_chars: int | None = DEFAULT_MAX_CHARS) -> str:
    """A critique template filled with a prompt and a response (see fill)."""
    return fill(template, {"prompt": prompt, "response": response}, max_chars)
