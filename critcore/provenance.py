"""Where a result came from: the commit (and whether the tree had uncommitted changes) and the
package versions. Read without running git, so it works in any checkout or none."""
from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
VERSIONED = ("critcore", "torch", "transformers", "accelerate", "peft", "datasets", "numpy", "pandas", "scipy",
             "altair", "vl-convert-python", "papermill", "ipykernel", "tqdm", "PyYAML", "pydantic", "ctranslate2")


def git_info(root: Path = PROJECT_ROOT) -> dict:
    """{commit, branch, dirty}: the checked-out commit read from .git, and whether tracked files
    differ from it (`git status`, when git is there; None when it cannot be told). {} outside git."""
    git = root / ".git"
    try:
        if git.is_file():  # a worktree: "gitdir: ..."
            git = (root / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
    except OSError:
        return {}
    commit, branch = head, None
    if head.startswith("ref:"):
        ref = head.split(":", 1)[1].strip()
        branch, commit = ref.removeprefix("refs/heads/"), None
        common = Path((git / "commondir").read_text().strip()) if (git / "commondir").is_file() else None
        for base in filter(None, (git, (git / common).resolve() if common else None)):
            if (base / ref).is_file():
                commit = (base / ref).read_text().strip()
                break
            packed = base / "packed-refs"
            if packed.is_file():
                commit = next((line.split()[0] for line in packed.read_text().splitlines()
                               if line.endswith(" " + ref)), None)
                if commit:
                    break
    return {"commit": commit, "branch": branch, "dirty": _dirty(root)}


def _dirty(root: Path) -> bool | None:
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def package_versions() -> dict:
    """{package: installed version, or None}."""
    return {name: next((d.version for d in importlib.metadata.distributions(name=name)), None) for name in VERSIONED}
