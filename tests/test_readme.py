"""The documentation's examples stay true (the README, docs/*.md, CONTRIBUTING.md): the files they
name exist, every `critcore` command line in them parses with the real command-line parser, the
README's Python example runs, and the README stays a front page that links every doc."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "CONTRIBUTING.md"]
TEXT = "\n".join([README, *(p.read_text(encoding="utf-8") for p in DOCS)])
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", TEXT, flags=re.S)


def _command_lines() -> list[str]:
    lines = []
    for lang, body in BLOCKS:
        if lang != "bash":
            continue
        joined = body.replace("\\\n", " ")
        lines += [line.split("  #")[0].strip() for line in joined.splitlines() if line.startswith("critcore ")]
    return lines


def test_paths_the_readme_names_exist():
    # a whole path, not the tail of a longer one (outputs/results/bench/x.py is not bench/x.py);
    # outputs/results is committed, the rest of outputs/ is what runs write
    named = set(re.findall(r"(?<![\w./-])((?:critcore|params|notebooks|bench|scripts|tests|outputs/results)/"
                           r"[\w./-]+\.(?:py|yaml|ipynb|sh))", TEXT))
    assert len(named) > 20
    missing = sorted(p for p in named if "..." not in p and not (ROOT / p).exists())
    assert not missing, missing


@pytest.mark.parametrize("line", _command_lines())
def test_command_lines_parse(line):
    from critcore.cli import build_parser

    argv = shlex.split(line)[1:]
    args = build_parser().parse_args(argv)  # SystemExit (a failure here) on an unknown command or flag
    assert args.func.__name__ == f"cmd_{argv[0]}"


def test_there_are_command_lines():
    assert {shlex.split(line)[1] for line in _command_lines()} >= {"train", "evaluate", "score", "critique", "run",
                                                                   "config"}


@pytest.mark.slow
def test_the_python_example_runs(tmp_path, monkeypatch, shared_data):
    """The Reward model section's example, at 64 pairs instead of 1,000 and in a temporary folder."""
    code = next(body for lang, body in re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)
                if lang == "python" and "train(" in body)
    assert '"limit": 1000' in code and "../shared/data" in code
    code = code.replace('"limit": 1000', '"limit": 64').replace("../shared/data", str(shared_data))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["result"].summary["steps"] == 2
    assert (tmp_path / "outputs/train/mine/model-copy/model.safetensors").is_file()


def test_the_readme_is_a_front_page_that_links_every_doc():
    assert README.count("\n") <= 250
    for path in DOCS:
        assert f"({path.relative_to(ROOT)})" in README, path
