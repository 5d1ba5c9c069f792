"""The ways in a new user takes: JupyterLab (`make lab`), a notebook run by papermill from the
notebooks/ folder, and the command line. Charts draw without the network and keep a PNG in the
saved notebook; a run lands in the project's outputs/ wherever it was started; progress reaches
a log as whole lines; the command line answers without importing torch; a GGUF model is
dequantized once per machine, whatever the clone."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from critcore import backbones
from critcore.report import NOTEBOOK_VEGALITE_MIME
from critcore.studies.runner import kernel_name

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "pandas", "altair", "accelerate", "datasets", "numpy")


# ---------------------------------------------------------------- the command line starts light


def _cli_in_a_fresh_process(argv: list[str], tmp_path: Path) -> tuple[dict, str]:
    """critcore.cli.main(argv) in a new interpreter: its exit code and the heavy modules it imported."""
    code = ("import json, sys\nfrom critcore.cli import main\n"
            f"try:\n    rc = main({argv!r})\nexcept SystemExit as e:\n    rc = e.code\n"
            f"print(json.dumps({{'rc': rc, 'heavy': sorted(m for m in {HEAVY!r} if m in sys.modules)}}))")
    env = {**os.environ, "CRITCORE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["train", "--help"]])
def test_help_and_version_import_no_heavy_library(argv, tmp_path):
    result, _ = _cli_in_a_fresh_process(argv, tmp_path)
    assert result == {"rc": 0, "heavy": []}


@pytest.mark.parametrize("command", ["train", "evaluate", "critique"])
def test_an_unknown_model_name_is_refused_before_torch_loads(command, tmp_path):
    flag = {"train": ["--backbone", "minlm", "--train", "generated"],
            "evaluate": ["--model", str(tmp_path / "no-model"), "--data", "g=generated"],
            "critique": ["--critic", "local:minlm", "--data", "generated", "--out", str(tmp_path / "o.jsonl")]}[command]
    result, stderr = _cli_in_a_fresh_process([command, *flag], tmp_path)
    assert result["rc"] == 2, stderr
    assert "torch" not in result["heavy"] and "transformers" not in result["heavy"], result
    assert "minlm" in stderr or "no-model" in stderr, stderr
    assert "Traceback" not in stderr


# ---------------------------------------------------------------- a notebook run from notebooks/


def _project(tmp_path: Path) -> Path:
    """A copy of the project's notebooks/ beside a pyproject.toml: a project of its own."""
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'mine'\n")
    shutil.copy(ROOT / "notebooks" / "quickstart.ipynb", project / "notebooks" / "quickstart.ipynb")
    return project


@pytest.mark.slow  # about 5 min on a loaded 2-core machine
def test_quickstart_from_notebooks_folder_lands_in_outputs_with_offline_charts(tmp_path):
    """papermill runs quickstart.ipynb with its working folder in notebooks/, as JupyterLab does:
    the run lands in the project's outputs/, the chart is the vega-lite 5 spec that JupyterLab
    draws itself plus a PNG for GitHub and nbviewer (no CDN anywhere), and the bars reach the
    output as whole lines."""
    import papermill

    project = _project(tmp_path)
    notebook = project / "notebooks" / "quickstart.ipynb"
    before = notebook.read_bytes()
    params = {"data": "generated", "n_train": 2, "n_eval": 2, "critic": "simulated:0.9", "threads": 1, "n_boot": 50,
              "run_id": "lab", "critique_cache": str(tmp_path / "c.sqlite"),
              "train": {"max_length": 64, "lr": 1.0e-4, "batch_size": 2, "micro_batch_size": 2, "epochs": 1}}
    executed = tmp_path / "executed.ipynb"
    env = {k: os.environ.pop(k) for k in ("CRITCORE_OUTPUTS", "CRITCORE_PROGRESS") if k in os.environ}
    try:
        papermill.execute_notebook(str(notebook), str(executed), parameters=params, kernel_name=kernel_name(),
                                   cwd=str(notebook.parent), progress_bar=False)
    finally:
        os.environ.update(env)

    out = project / "outputs" / "quickstart" / "lab"
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    assert (out / "accuracy.png").is_file() and (out / "results.csv").is_file()
    assert not (project / "notebooks" / "outputs").exists()
    assert notebook.read_bytes() == before  # running it did not touch the notebook

    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert "cdn.jsdelivr" not in json.dumps(outputs)
    charts = [o for o in outputs if NOTEBOOK_VEGALITE_MIME in o.get("data", {})]
    assert len(charts) == 1
    data = charts[0]["data"]
    assert data["image/png"] and charts[0]["metadata"]["image/png"]["width"] > 100
    assert data[NOTEBOOK_VEGALITE_MIME]["$schema"].endswith("/v5.json")
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)  # no frozen bar
    stderr = "".join(o["text"] for o in outputs if o.get("name") == "stderr")
    assert "\r" not in stderr
    assert re.search(r"^RMs?\b.*2/2", stderr, flags=re.M) or re.search(r"2/2 \[", stderr), stderr[-2000:]


def test_notebooks_carry_the_metadata_the_kernel_reports():
    """JupyterLab writes the kernel's kernelspec and language_info into a notebook it opens, and
    leaves it unmodified only where they are already equal; the Python patch version is the one
    part that differs between machines."""
    from ipykernel.ipkernel import IPythonKernel
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    if "critcore" not in specs:
        pytest.skip("the critcore kernel is not registered (make setup registers it)")
    spec = KernelSpecManager().get_kernel_spec("critcore")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        meta = nbformat.read(path, as_version=4).metadata
        assert meta["kernelspec"] == {"display_name": spec.display_name, "language": spec.language, "name": "critcore"}
        reported = dict(IPythonKernel.language_info)
        assert {**meta["language_info"], "version": None} == {**reported, "version": None}, path.name
        assert meta["language_info"]["version"].split(".")[:2] == reported["version"].split(".")[:2]


def test_notebook_outputs_folder_is_ignored_by_git():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    paths = ["notebooks/outputs/quickstart/x/run.json", "notebooks/.ipynb_checkpoints/quickstart-checkpoint.ipynb"]
    out = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.split() == paths, out.stderr


# ---------------------------------------------------------------- make lab


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_starts_and_prints_a_url_that_answers(tmp_path):
    """As root too (this machine's CI runs as root): the Makefile adds --allow-root there."""
    port = _free_port()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    proc = subprocess.Popen(["make", "--no-print-directory", "lab", f"LAB_ARGS=--no-browser --port={port} "
                             "--ServerApp.port_retries=0"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen, url = [], None
    try:
        deadline = time.monotonic() + 300
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            found = re.search(rf"(http://(?:127\.0\.0\.1|localhost):{port}/lab\?token=\w+)", line)
            url = found.group(1) if found else None
        assert url, "".join(seen)[-3000:]
        url = re.sub(r"//localhost:", "//127.0.0.1:", url)  # localhost may name ::1 first
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy for loopback
        page = None
        while page is None:  # a loaded machine may print the URL a moment before it answers
            try:
                page = opener.open(url, timeout=60)
            except urllib.error.URLError:
                assert proc.poll() is None and time.monotonic() < deadline, "".join(seen)[-3000:]
                time.sleep(1)
        with page:
            assert page.status == 200 and "JupyterLab" in page.read().decode()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    assert ("--allow-root" in "".join(seen)) == (os.getuid() == 0)  # make echoes the command it runs


# ---------------------------------------------------------------- one dequantized model per machine


def test_content_hash_is_the_same_for_every_copy_and_read_once(tmp_path, monkeypatch):
    monkeypatch.setenv("CRITCORE_CACHE", str(tmp_path / "cache"))
    payload = os.urandom(3 << 20)
    a, b = tmp_path / "clone-a" / "m.gguf", tmp_path / "clone-b" / "m.gguf"
    for path, mtime in ((a, 1_000_000), (b, 2_000_000)):
        path.parent.mkdir()
        path.write_bytes(payload)
        os.utime(path, (mtime, mtime))
    import hashlib

    expected = hashlib.sha256(payload).hexdigest()
    assert backbones.content_sha256(a) == backbones.content_sha256(b) == expected
    memos = sorted((tmp_path / "cache" / "sha256").iterdir())
    assert len(memos) == 2 and {m.read_text() for m in memos} == {expected}
    memos[0].write_text("remembered")  # a second look reads the memo, not the file
    assert "remembered" in {backbones.content_sha256(a), backbones.content_sha256(b)}


@pytest.mark.slow
def test_a_second_clone_reuses_the_dequantized_smollm2(tmp_path, monkeypatch):
    """Two copies of the real SmolLM2 GGUF, at two paths with two mtimes (two clones): one
    dequantized folder, named by the content hash."""
    monkeypatch.setenv("CRITCORE_CACHE", str(tmp_path / "cache"))
    source, name = backbones._alias_source("smollm2")
    copies = []
    for i, clone in enumerate(("clone-a", "clone-b")):
        (tmp_path / clone).mkdir()
        shutil.copy(source / name, tmp_path / clone / name)
        os.utime(tmp_path / clone / name, (1_000_000 * (i + 1),) * 2)
        copies.append(tmp_path / clone / name)
    first = backbones.resolve(str(copies[0]), "critic model")
    stamp = (Path(first) / "config.json").stat().st_mtime_ns
    second = backbones.resolve(str(copies[1]), "critic model")
    assert first == second and Path(first).name == backbones.content_sha256(copies[0])
    assert [p.name for p in (tmp_path / "cache" / "dequantized").iterdir() if not p.name.startswith(".")] == [Path(first).name]
    assert (Path(first) / "config.json").stat().st_mtime_ns == stamp  # not written again


# ---------------------------------------------------------------- what the demo prints at the end


def test_demo_summary_shows_the_table_labels_zero_width_intervals_and_names_the_files(tmp_path):
    from critcore.studies.quickstart import NO_INTERVAL, quickstart_summary

    (tmp_path / "results.csv").write_text("backbone,critic,n_train,metric,acc,lo,hi,note\n"
                                          f"minilm,none,16,Chat,39.8,39.8,39.8,{NO_INTERVAL}\n"
                                          "minilm,smollm2,16,PandaLM,62.5,25.0,87.5,\n")
    for name in ("accuracy.html", "accuracy.png", "rms/minilm__none/eval/rewardbench_report.html"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    lines = quickstart_summary(tmp_path).splitlines()
    assert lines[1].split()[:5] == ["none", "Chat", "39.8", "[39.8,", "39.8]"] and lines[1].endswith(NO_INTERVAL)
    assert lines[2].split() == ["smollm2", "PandaLM", "62.5", "[25.0,", "87.5]"]
    text = "\n".join(lines)
    for name in ("accuracy.html", "accuracy.png", "rewardbench_report.html", "run.json"):
        assert name in text
