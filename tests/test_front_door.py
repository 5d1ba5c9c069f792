"""The ways in a new user takes: JupyterLab (`make lab`; the quickstart run there in Chromium), a
notebook run by papermill from the notebooks/ folder, and the command line. Charts draw without
the network and keep a PNG in the saved notebook; a run lands in the project's outputs/ wherever
it was started; progress reaches a log as whole lines; the command line answers without
importing torch; a GGUF model is dequantized once per machine, whatever the clone."""
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from critcore import atomic, backbones
from critcore.report import NOTEBOOK_VEGALITE_MIME
from critcore.studies.runner import kernel_name

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "pandas", "altair", "accelerate", "datasets", "numpy")
RUN_ENV = ("CRITCORE_OUTPUTS", "CRITCORE_PROGRESS")  # left out where a test runs a notebook as a user would


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


def _tiny_params(tmp_path: Path, **changes) -> dict:
    """The quickstart's parameters at the smallest size that runs every step (a simulated critic,
    the generated set), with run_id "lab" and the critique cache in tmp_path."""
    return {"data": "generated", "n_train": 2, "n_eval": 2, "critic": "simulated:0.9", "threads": 1, "n_boot": 50,
            "run_id": "lab", "critique_cache": str(tmp_path / "c.sqlite"),
            "train": {"max_length": 64, "lr": 1.0e-4, "batch_size": 2, "micro_batch_size": 2, "epochs": 1},
            **changes}


@pytest.mark.slow  # a whole notebook run: 48 s on a quiet 2-core machine, minutes on a loaded one
def test_quickstart_from_notebooks_folder_lands_in_outputs_with_offline_charts(tmp_path):
    """papermill runs quickstart.ipynb with its working folder in notebooks/, as JupyterLab does:
    the run lands in the project's outputs/, the chart is the vega-lite 5 spec that JupyterLab
    draws itself plus a PNG for GitHub and nbviewer (no CDN anywhere), and the bars reach the
    output as whole lines."""
    import papermill

    project = _project(tmp_path)
    notebook = project / "notebooks" / "quickstart.ipynb"
    before = notebook.read_bytes()
    executed = tmp_path / "executed.ipynb"
    env = {k: os.environ.pop(k) for k in RUN_ENV if k in os.environ}
    try:
        papermill.execute_notebook(str(notebook), str(executed), parameters=_tiny_params(tmp_path),
                                   kernel_name=kernel_name(), cwd=str(notebook.parent), progress_bar=False)
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


def _stop(proc: subprocess.Popen) -> None:
    """Stop a server and what it started (its kernels): its whole process group."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_starts_and_prints_a_url_that_answers(tmp_path):
    """As root too (this machine's CI runs as root): the Makefile adds --allow-root there."""
    port = _free_port()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    proc = subprocess.Popen(["make", "--no-print-directory", "lab", f"LAB_ARGS=--no-browser --port={port} "
                             "--ServerApp.port_retries=0"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen, url, lines = [], None, queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] + [lines.put("")], daemon=True).start()
    try:
        deadline = time.monotonic() + 300
        while url is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=5)
            except queue.Empty:
                continue
            if not line:
                break
            seen.append(line)  # the URL opens notebooks/ (LabApp.default_url)
            found = re.search(rf"(http://(?:127\.0\.0\.1|localhost):{port}/lab/tree/notebooks\?token=\w+)", line)
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
        _stop(proc)
    assert ("--allow-root" in "".join(seen)) == (os.getuid() == 0)  # make echoes the command it runs


# ---------------------------------------------------------------- the quickstart in JupyterLab, in a real browser


def _browser() -> str:
    """The system Chromium (Playwright cannot download its own here), or a skip that says so."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("no chromium on PATH (apt-get install chromium; .ci/run installs it as root)")
    return found


def _start_lab(root: Path, port: int, token: str, tmp_path: Path) -> subprocess.Popen:
    """JupyterLab on root (as `make lab` on the project), on 127.0.0.1:port with a known token and
    its own settings, answering /api/status; its log in tmp_path/lab.log."""
    env = {k: v for k, v in os.environ.items() if k not in RUN_ENV}
    env.update({name: str(tmp_path / "jupyter" / folder) for name, folder in (
        ("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTERLAB_SETTINGS_DIR", "settings"), ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"))})
    env["HF_HUB_OFFLINE"] = "1"
    args = [sys.executable, "-m", "jupyterlab", str(root), "--no-browser", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}"]
    with open(tmp_path / "lab.log", "w") as log:
        proc = subprocess.Popen(args + (["--allow-root"] if os.getuid() == 0 else []), env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy for loopback
    status = urllib.request.Request(f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"token {token}"})
    deadline = time.monotonic() + 300
    while True:
        try:
            with opener.open(status, timeout=60):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(proc)
                pytest.fail("JupyterLab did not answer:\n" + (tmp_path / "lab.log").read_text()[-3000:])
            time.sleep(1)


@pytest.mark.slow  # 72 to 120 s here (2 cores), set-up of JupyterLab and Chromium included
def test_quickstart_run_all_in_jupyterlab_draws_the_chart_offline_and_the_report_page_works(tmp_path):
    """A new user's first minutes, in Chromium with no network beyond the loopback: JupyterLab on
    a project (as `make lab`), notebooks/quickstart.ipynb on the tiny parameters, Run All Cells
    with the critcore kernel. The chart cell draws the chart itself (vega's canvas or SVG, no
    "Error loading script" from a CDN), the bars are live widgets and the run lands in the
    project's outputs/. Then the run's per-example report page, as Lab serves it: sorting by margin, filtering
    by subset and verdict, and searching show the rows its scores CSV says they should."""
    import pandas as pd
    from jupyter_client.kernelspec import KernelSpecManager
    from playwright.sync_api import expect, sync_playwright

    chromium = _browser()
    if "critcore" not in KernelSpecManager().find_kernel_specs():
        pytest.skip("the critcore kernel is not registered (make setup registers it)")
    project = _project(tmp_path)
    notebook = project / "notebooks" / "quickstart.ipynb"
    # the tiny parameters written into the parameters cell, as a user edits it (n_eval 8: four subsets
    # to filter); a cell papermill injects would make the bars lines, as in a log
    nb = nbformat.read(notebook, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\n" + "\n".join(f"{k} = {v!r}" for k, v in _tiny_params(tmp_path, n_eval=8).items())
    nbformat.write(nb, notebook)
    chart_index = next(i for i, c in enumerate(nb.cells) if "quickstart_chart(" in c.source)
    out = project / "outputs" / "quickstart" / "lab"
    port, token = _free_port(), "front-door"
    lab = _start_lab(project, port, token, tmp_path)
    offsite = []  # what the pages asked of any host but the loopback: refused, as on a plane

    def refuse(route):
        offsite.append(route.request.url)
        route.abort()

    def completed() -> bool:
        return (out / "run.json").is_file() and json.loads((out / "run.json").read_text())["status"] == "completed"

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium)
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.set_default_timeout(120_000)
            context.route(re.compile(rf"^(?!http://127\.0\.0\.1:{port}/)https?://"), refuse)
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}/lab/tree/notebooks/quickstart.ipynb?token={token}", timeout=300_000)
            expect(page.locator("#jp-main-statusbar")).to_contain_text(  # the kernel has started
                re.compile(r"critcore \(Python 3\).*Idle", re.S), timeout=300_000)

            page.locator(".lm-MenuBar-itemLabel:text-is('Run')").click()
            page.locator(".lm-Menu-itemLabel:text-is('Run All Cells')").click()
            error = page.locator(".jp-OutputArea-output", has_text="Traceback (most recent call last)")
            dialog = page.locator(".jp-Dialog")  # the kernel died, or anything else that stops a user
            deadline = time.monotonic() + 1800
            while not completed():
                assert error.count() == 0, error.first.inner_text()[-3000:]
                assert dialog.count() == 0, dialog.first.inner_text()
                assert time.monotonic() < deadline, "Run All did not finish in 30 min:\n" + \
                    (tmp_path / "lab.log").read_text()[-3000:]
                page.wait_for_timeout(2000)
            assert not (project / "notebooks" / "outputs").exists()

            chart_cell = page.locator(".jp-Notebook .jp-Cell").nth(chart_index)
            chart_cell.scroll_into_view_if_needed()
            drawn = chart_cell.locator(".jp-RenderedVegaLite .marks")  # vega draws into canvas.marks or svg.marks
            drawn.or_(chart_cell.get_by_text("Error loading script")).first.wait_for()
            output = chart_cell.locator(".jp-OutputArea").inner_text()
            assert "Error loading script" not in output, output
            box = drawn.first.bounding_box()
            assert box and box["width"] > 100 and box["height"] > 50, box
            assert "Error loading script" not in page.locator(".jp-Notebook").inner_text()
            assert page.locator(".jp-OutputArea-output .widget-hprogress").count() > 0  # live bars
            assert offsite == [], offsite

            reports = sorted(out.glob("rms/*/eval/generated_report.html"))
            assert len(reports) == 2, sorted(str(p.relative_to(out)) for p in out.rglob("*.html"))
            scores = pd.read_csv(reports[-1].with_name("generated_scores.csv"), keep_default_na=False)
            # the page as Lab serves it (right-click, Open in New Browser Tab): outputs/ is in Lab's tree
            page.goto(f"http://127.0.0.1:{port}/files/{reports[-1].relative_to(project).as_posix()}?token={token}")
            n = len(scores)

            def shows(ids, why: str) -> None:
                """The page shows the rows `ids` (in any order) and counts them."""
                assert sorted(page.locator("#t tbody tr:visible td:first-child").all_inner_texts()) == sorted(ids), why
                assert page.locator("#count").inner_text() == f"{len(ids)} of {n} rows", why

            def margins() -> list[float]:
                return [float(x) for x in page.locator("#t tbody tr:visible td:nth-child(4)").all_inner_texts()]

            shows(scores["id"], "every row at first")
            page.locator("th:text-is('margin')").click()
            assert margins() == sorted(float(f"{m:.3f}") for m in scores["margin"]), "smallest margin first"
            page.locator("th:text-is('margin')").click()
            assert margins() == sorted((float(f"{m:.3f}") for m in scores["margin"]), reverse=True), "largest first"
            shows(scores["id"], "sorting hides nothing")

            subset = scores["subset"].value_counts().index[-1]  # the rarest subset
            page.select_option("#subset", subset)
            shows(scores.loc[scores["subset"] == subset, "id"], f"subset {subset}")
            page.select_option("#subset", label="all")
            page.select_option("#verdict", "wrong")
            shows(scores.loc[scores["verdict"] == "wrong", "id"], "the wrong ones")
            page.select_option("#verdict", label="all")

            query = "Capital OF"  # the search ignores case and looks in every cell
            shown_text = ["id", "subset", "verdict", "prompt", "chosen", "rejected", "chosen_critique", "rejected_critique"]
            text = scores[shown_text].astype(str).agg(" ".join, axis=1).str.lower()
            found = scores.loc[text.str.contains(query.lower(), regex=False), "id"]
            assert 0 < len(found) < n, "the generated eval set has capital-city questions and others"
            page.fill("#search", query)
            shows(found, f"search {query!r}")
            assert offsite == [], offsite
            browser.close()
    finally:
        _stop(lab)


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


_WAIT_AND_BUILD = """
import sys
from critcore import atomic
with atomic.made_once(sys.argv[1], "done") as needed:
    if needed:
        with atomic.atomic_dir(sys.argv[1]) as tmp:
            (tmp / "done").write_text("child")
print(needed)
"""


def _waits_on_a_lock(pid: int) -> bool:
    """/proc/locks marks a blocked request with '->'; its pid is the 5th field."""
    return any(line.split()[1] == "->" and line.split()[5] == str(pid) for line in Path("/proc/locks").read_text().splitlines()
               if len(line.split()) > 5)


def test_a_folder_another_process_is_building_is_waited_for_not_built_again(tmp_path):
    """Two processes of one launch need the same converted model (the dequantized critic): the
    second waits for the first's lock and then reuses its folder; it neither builds it again nor
    replaces the folder under a process that is reading it."""
    import fcntl

    out = tmp_path / "dequantized" / "model"
    with atomic.made_once(out, "done") as needed:
        assert needed
        child = subprocess.Popen([sys.executable, "-c", _WAIT_AND_BUILD, str(out)], stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not _waits_on_a_lock(child.pid):
            assert child.poll() is None and time.monotonic() < deadline, "the second process did not wait"
            time.sleep(0.05)
        with atomic.atomic_dir(out) as tmp:
            (tmp / "done").write_text("first")
    assert child.communicate(timeout=120)[0].strip() == "False"
    assert (out / "done").read_text() == "first"
    with open(tmp_path / "dequantized" / ".model.lock") as f:  # released: nothing holds it now
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


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
    """One row per metric, one column per RM; an interval without width is marked and explained
    once; the run folder's files are named, a kind per line (it fits one screen)."""
    from critcore.studies.quickstart import NO_INTERVAL, quickstart_summary

    (tmp_path / "results.csv").write_text("backbone,critic,n_train,metric,acc,lo,hi,note\n"
                                          f"minilm,none,16,Chat,39.8,39.8,39.8,{NO_INTERVAL}\n"
                                          "minilm,smollm2,16,Chat,59.2,40.0,70.1,\n"
                                          "minilm,none,16,PandaLM,50.0,12.5,87.5,\n"
                                          "minilm,smollm2,16,PandaLM,62.5,25.0,87.5,\n")
    for name in ("accuracy.html", "accuracy.png", "disagree_a.html", "rms/minilm__none/eval/rewardbench_report.html",
                 "rms/minilm__smollm2/eval/rewardbench_report.html", "quickstart.ipynb"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    lines = quickstart_summary(tmp_path).splitlines()
    assert lines[0].split()[-2:] == ["none", "smollm2"]
    assert lines[1].split() == ["Chat", "39.8", "[39.8,", "39.8]*", "59.2", "[40.0,", "70.1]"]
    assert lines[2].split() == ["PandaLM", "50.0", "[12.5,", "87.5]", "62.5", "[25.0,", "87.5]"]
    assert lines[3] == f"* {NO_INTERVAL}"
    text = "\n".join(lines)
    assert "accuracy.html, .png" in text and "disagree_a.html" not in text and "(2)" in text
    for name in ("results.csv", "rms/*/eval/*_report.html", "disagree_*.html", "quickstart.ipynb", "run.json"):
        assert f"  {name} " in text, name
    assert len(lines) <= 20


def test_progress_lines_carry_no_cursor_moves(capsys):
    """A nested bar redraws with cursor-up escapes; as log lines each state is one clean line and
    a redraw that moves the cursor only is no line at all (the demo printed '[A' lines)."""
    from critcore.progress import _Lines

    out = _Lines()
    for text in ("\rtrain:  25%|##  | 8/32", "\x1b[A", "\n", "\rtrain:  25%|##  | 8/32\x1b[A", "\rtrain:  50%|#### | 16/32",
                 "\rRMs: 100%|####| 2/2 [00:23<00:00, 11.92s/RM]", "\rRMs: 100%|####| 2/2 [00:23<00:00, 11.96s/RM]"):
        out.write(text)  # the last is tqdm's redraw at close: the same count, new times
    assert capsys.readouterr().err.splitlines() == ["train:  25%|##  | 8/32", "train:  50%|#### | 16/32",
                                                    "RMs: 100%|####| 2/2 [00:23<00:00, 11.92s/RM]"]
