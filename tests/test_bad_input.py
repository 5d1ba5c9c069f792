"""A corpus of bad and awkward input files, each through the Python API and the command line.
Every bad file is a DataError naming the file (and the line where there is one); the CLI prints
it in one line, exits 2, shows no traceback and writes nothing under --out. Awkward but good files
(a BOM, CRLF, gzip, a 1 MB string) load."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from critcore.data import DataError, load

CLI = [sys.executable, "-m", "critcore.cli"]
GOOD = {"id": "a", "prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}


def line(d: dict) -> bytes:
    return (json.dumps(d, ensure_ascii=False) + "\n").encode()


def good_lines(n: int = 3) -> bytes:
    return b"".join(line({**GOOD, "id": f"p{i}"}) for i in range(n))


def build(folder: Path) -> dict[str, tuple[Path, str | None, str]]:
    """name -> (path, the spec's format or None for a bare path, what the error must say; "" = loads)."""
    f = {}

    def put(name, data: bytes, fmt=None, expect=""):
        path = folder / name
        path.write_bytes(data)
        f[name] = (path, fmt, expect)

    put("latin1.jsonl", good_lines(4) + line({**GOOD, "id": "x", "chosen": "caf\u00e9"}).replace("é".encode(), b"\xe9"),
        expect=":5: byte ")
    put("utf16.jsonl", good_lines().decode().encode("utf-16"), expect="UTF-16")
    put("bom.jsonl", b"\xef\xbb\xbf" + good_lines())
    put("crlf.jsonl", good_lines().replace(b"\n", b"\r\n"))
    put("empty.jsonl", b"", expect="no pairs")
    put("blank.jsonl", b"\n  \n\t\n", expect="no pairs")
    put("truncated.jsonl", good_lines() + b'{"id": "t", "prompt": "cut', expect=":4: invalid JSON")
    put("pairs.jsonl.gz", gzip.compress(good_lines()))
    put("damaged.jsonl.gz", gzip.compress(good_lines())[:30], expect="damaged gzip")
    put("array.jsonl", json.dumps([{"idx": 1, "instruction": "i", "input": "", "response1": "a", "response2": "b",
                                    "annotator1": 1, "annotator2": 1, "annotator3": 1}]).encode(),
        expect="one JSON array, not JSON Lines (one object per line); its records look like format 'pandalm'")
    put("huge.jsonl", line({**GOOD, "chosen": "x" * 1_000_000}))
    put("nan_margin.jsonl", good_lines() + b'{"id": "n", "prompt": "q", "chosen": "a", "rejected": "b", "margin": NaN}\n',
        expect=":4: field 'margin': not a finite number")
    put("negative_margin.jsonl", good_lines() + line({**GOOD, "id": "m", "margin": -1.0}),
        expect=":4: field 'margin': -1.0 is negative")
    put("bad_role.jsonl", good_lines() + line({**GOOD, "id": "r", "prompt": [{"role": "wizard", "content": "hi"}]}),
        expect=":4: field 'prompt[0].role': unknown role 'wizard'")
    put("identical.jsonl", good_lines() + line({**GOOD, "id": "i", "rejected": "4"}))  # a counted skip
    put("all_skipped.jsonl", line({**GOOD, "rejected": "4"}) + line({**GOOD, "id": "b", "chosen": " "}),
        expect="no pairs: skipped 2 of 2 records (empty_response 1, identical_responses 1)")
    put("rewardbench.jsonl", line({"prompt": "q", "chosen": "a", "rejected": "b", "chosen_model": "m", "rejected_model": "n",
                                   "subset": "no-such-subset", "id": 1}), fmt="rewardbench")
    put("pandalm_as_jsonl.json", json.dumps([{"idx": 1}]).encode(), fmt="jsonl",
        expect="one JSON array")
    (folder / "a_directory").mkdir()
    f["a_directory"] = (folder / "a_directory", None, "is a directory")
    f["missing.jsonl"] = (folder / "missing.jsonl", None, "no such file")
    return f


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build(tmp_path_factory.mktemp("corpus"))


def spec(entry) -> str:
    path, fmt, _ = entry
    return f"{fmt}:{path}" if fmt else str(path)


CASES = ["latin1.jsonl", "utf16.jsonl", "bom.jsonl", "crlf.jsonl", "empty.jsonl", "blank.jsonl", "truncated.jsonl",
         "pairs.jsonl.gz", "damaged.jsonl.gz", "array.jsonl", "huge.jsonl", "nan_margin.jsonl", "negative_margin.jsonl",
         "bad_role.jsonl", "identical.jsonl", "all_skipped.jsonl", "rewardbench.jsonl", "pandalm_as_jsonl.json",
         "a_directory", "missing.jsonl"]


@pytest.mark.parametrize("name", CASES)
def test_api(corpus, name):
    path, _, expect = corpus[name]
    if not expect:
        loaded = load(spec(corpus[name]))
        assert len(loaded.pairs) >= 1
        return
    with pytest.raises(DataError) as e:
        load(spec(corpus[name]))
    message = str(e.value)
    assert str(path) in message and expect in message, message
    assert "\n" not in message


def test_positions_count_from_the_file_not_a_chunk(tmp_path):
    """A bad byte on line 5001 is reported on line 5001, at its offset in the file."""
    data = good_lines(5000) + line({**GOOD, "id": "bad"}).replace(b"What", b"Wh\xffat")
    (tmp_path / "long.jsonl").write_bytes(data)
    offset = data.index(bytes([0xFF]))
    with pytest.raises(DataError, match=rf"long\.jsonl:5001: byte {offset} \(0xff\)"):
        load(str(tmp_path / "long.jsonl"))


def test_unsectioned_subsets_are_named(corpus, rm_minilm):
    from critcore.evaluate import UnsectionedWarning, evaluate

    pairs = load(spec(corpus["rewardbench.jsonl"])).pairs
    with pytest.warns(UnsectionedWarning, match="no-such-subset"):
        summary = evaluate(rm_minilm, {"rb": pairs}, sections={"chat": {"alpacaeval-easy": 100}}, max_length=32)
    assert summary["rb"]["sections"] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(rm_minilm, {"rb": pairs}, max_length=32)  # no sections asked for: nothing to warn about


def run(*args, **kw):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=600, **kw)


class _Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def cli(capsys, *args):
    """critcore's main() in this process (tests/test_cli.py runs it as a real process)."""
    from critcore.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return _Result(code, captured.out, captured.err)


@pytest.mark.parametrize("name", CASES)
def test_cli(corpus, name, tmp_path, capsys):
    out = tmp_path / "out" / "critiqued.jsonl"
    res = cli(capsys, "critique", "--critic", "simulated:0.9", "--data", spec(corpus[name]), "--out", out,
              "--cache", tmp_path / "c.sqlite", "--quiet")
    expect = corpus[name][2]
    if not expect:
        assert res.returncode == 0, res.stderr[-2000:]
        stats = json.loads(res.stdout)  # stdout is the JSON result alone
        assert stats["pairs"] >= 1 and out.is_file()
        if name == "identical.jsonl":
            assert "skipped 1 of 4 records (identical_responses 1)" in res.stderr  # skips reach stderr
        return
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("critcore critique: error: ") and expect in lines[0], lines
    assert not res.stdout.strip() and not (tmp_path / "out").exists()


def test_a_real_process_prints_one_line_too(corpus, tmp_path):
    res = run("critique", "--critic", "simulated:0.9", "--data", spec(corpus["latin1.jsonl"]), "--out",
              tmp_path / "out" / "o.jsonl", "--cache", tmp_path / "c.sqlite")
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert res.returncode == 2 and len(lines) == 1 and ":5: byte " in lines[0] and not res.stdout
    assert not (tmp_path / "out").exists()


def _as_nobody(fn):
    """Run fn() in a forked child that has dropped to the unprivileged user 'nobody' (root reads
    any file); returns (exit status, what it wrote to stderr)."""
    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec, critcore is already imported
        os.close(read)
        os.dup2(write, 2)
        sys.stderr = open(2, "w", closefd=False)  # pytest's capture stands in for sys.stderr otherwise
        code = 99
        try:
            if os.geteuid() == 0:
                os.setuid(nobody)
            code = fn()
        except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
            import traceback

            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code if isinstance(code, int) else 0)
    os.close(write)
    with os.fdopen(read) as f:
        err = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs POSIX users")
def test_unreadable_file(tmp_path):
    from critcore.cli import main

    # The same command on a missing file first, here: it imports all the child needs, which cannot
    # read the interpreter's own files once it is 'nobody'.
    assert main(["critique", "--critic", "simulated:0.9", "--data", str(tmp_path / "missing.jsonl"),
                 "--out", str(tmp_path / "o.jsonl"), "--cache", str(tmp_path / "c")]) == 2

    path = tmp_path / "secret.jsonl"
    path.write_bytes(good_lines())
    path.chmod(0)
    tmp_path.chmod(0o755)

    def api():
        try:
            load(str(path))
        except DataError as e:
            print(str(e), file=sys.stderr)
            return 2
        return 0

    code, err = _as_nobody(api)
    assert code == 2 and f"{path}: permission denied" in err, err
    code, err = _as_nobody(lambda: main(["critique", "--critic", "simulated:0.9", "--data", str(path),
                                         "--out", str(tmp_path / "out" / "o.jsonl"), "--cache", str(tmp_path / "c")]))
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and "secret.jsonl: permission denied" in lines[0], err
    assert not (tmp_path / "out").exists()


def test_damaged_model_folders_are_one_line_errors(rm_minilm, tmp_path):
    """A model folder with .bin weights only, damaged safetensors, a broken config.json, or a recipe
    that is not an object, lacks a key scoring reads or has a wrong type: `critcore score` names the
    folder or the file (and the field) in one line and exits 2. A recipe without its critic would
    otherwise read as "trained without critiques"."""
    good = tmp_path / "good"
    rm_minilm.save(good, {"max_length": 64, "with_critiques": False, "critic": None})
    cases = {}

    def variant(name, change, *needles):
        folder = tmp_path / name
        shutil.copytree(good, folder)
        change(folder)
        cases[name] = (folder, needles)

    def bin_only(f):
        (f / "model.safetensors").rename(f / "pytorch_model.bin")

    variant("bin_only", bin_only, "bin_only", "no .safetensors weights")
    variant("cut_weights", lambda f: (f / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes()[:500]),
            "cut_weights", "cannot be loaded", "SafetensorError")
    variant("bad_config", lambda f: (f / "config.json").write_text('{"model_type'), "bad_config", "cannot be loaded")
    for name, recipe, needles in (("list", "[1]", ("JSON object",)),
                                  ("no_critic", '{"max_length": 64, "with_critiques": false}', ("'critic'", "missing")),
                                  ("bad_length", '{"max_length": "64", "with_critiques": false, "critic": null}',
                                   ("'max_length'", "valid integer")),
                                  ("cut", '{"max_len', ("unreadable recipe",))):
        variant(f"recipe_{name}", lambda f, r=recipe: (f / "critcore_recipe.json").write_text(r),
                f"recipe_{name}/critcore_recipe.json", *needles)
    ok = subprocess.run(CLI + ["score", "--model", str(good), "--prompt", "p", "--response", "r"], capture_output=True,
                        text=True, timeout=600)
    assert ok.returncode == 0 and "reward" in json.loads(ok.stdout), ok.stderr[-2000:]
    for name, (folder, needles) in cases.items():
        out = subprocess.run(CLI + ["score", "--model", str(folder), "--prompt", "p", "--response", "r"],
                             capture_output=True, text=True, timeout=600)
        lines = [ln for ln in out.stderr.splitlines() if ln.startswith("critcore ")]
        assert out.returncode == 2 and "Traceback" not in out.stderr and len(lines) == 1, (name, out.stderr[-2000:])
        for needle in needles:
            assert needle in lines[0], (name, lines[0])
