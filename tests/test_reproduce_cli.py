"""`selfdistill reproduce` (experiments/reproduce.py): writes outside the tracked files by default, owns its
folder, refuses a run with other settings unless --overwrite, resumes one with the same settings; the
neural part is replaced by a stand-in here (its own tests live with it)."""

from __future__ import annotations

import errno
import io
import json
import os
import re
from pathlib import Path

import pytest

from selfdistill import cli
from selfdistill.io import RunFolder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_cli(monkeypatch):
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"reproduce": cli.SUBCOMMANDS["reproduce"]})
    return lambda *argv: cli.main(["reproduce", *map(str, argv)])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("selfdistill reproduce: error: ") and "\n" not in err, err
    return err


def test_the_readme_main_command_writes_to_an_ignored_folder():
    readme = (REPO / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)\n", readme).group(1)
    assert "selfdistill reproduce" in first
    out = re.search(r"--out (\S+)", first)
    target = out.group(1) if out else "runs/reproduce"
    assert target.split("/")[0] == "runs" and "results" not in first
    assert "/runs/" in (REPO / ".gitignore").read_text().splitlines()
    import argparse

    from selfdistill.experiments import reproduce

    parser = argparse.ArgumentParser()
    reproduce.add_arguments(parser)
    assert str(parser.parse_args([]).out) == "runs/reproduce"


def test_kernel_reproduction_reruns_the_same_command_refuses_others_and_overwrite_replaces_it(
    tmp_path, run_cli, capsys, monkeypatch
):
    from matplotlib.figure import Figure

    targets = []
    original = Figure.savefig

    def spy(self, fname, *args, **kwargs):
        targets.append(fname)
        return original(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    out = tmp_path / "r"
    assert run_cli("--what", "kernel", "--out", out) == 0
    assert len(targets) == 4 and all(isinstance(t, io.BytesIO) for t in targets)  # rendered in memory
    record = json.loads((out / "run.json").read_text())
    assert record["finished"] is True and record["settings"]["epsilon"] == 0.05
    assert (out / "kernel" / "paper" / "figure2.png").is_file()
    capsys.readouterr()
    (out / "stale.txt").write_text("from another run")
    assert run_cli("--what", "kernel", "--out", out) == 0  # the same command again: written again
    assert "holds a finished run of this command" in capsys.readouterr().out
    assert run_cli("--what", "kernel", "--out", out, "--epsilon", 0.06) == 2
    err = _one_error_line(capsys)
    assert f"--out {out} holds a finished reproduce run with other settings" in err
    assert "use --overwrite to replace it" in err
    assert run_cli("--what", "kernel", "--out", out, "--epsilon", 0.01, "--overwrite") == 2  # infeasible eps
    assert "infeasible" in _one_error_line(capsys) and (out / "stale.txt").exists()  # nothing was cleared
    assert run_cli("--what", "kernel", "--out", out, "--epsilon", 0.06, "--overwrite") == 0
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "run.json").read_text())["settings"]["epsilon"] == 0.06


def test_a_folder_with_other_content_or_in_use_is_refused(tmp_path, run_cli, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert run_cli("--what", "kernel", "--out", other) == 2
    assert f"--out {other} is not empty (it holds notes.txt); use --overwrite" in _one_error_line(capsys)
    busy = tmp_path / "busy"
    with RunFolder(busy):
        for extra in ([], ["--overwrite"]):
            assert run_cli("--what", "kernel", "--out", busy, *extra) == 2
            assert f"--out {busy} is in use by another selfdistill run" in _one_error_line(capsys)
    afile = tmp_path / "f"
    afile.write_text("x")
    assert run_cli("--what", "kernel", "--out", afile) == 2
    assert "is a file, not a folder" in _one_error_line(capsys)


def test_an_interrupted_run_resumes_with_the_same_command_only(tmp_path, run_cli, capsys, monkeypatch):
    from selfdistill.experiments import neural_reproduce

    calls = []

    def fake_neural(out_dir, quick=False):
        calls.append(quick)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / f"round{len(calls)}.txt").write_text("done")
        if len(calls) == 1:
            raise KeyboardInterrupt  # killed during the neural chain

    monkeypatch.setattr(neural_reproduce, "reproduce_neural", fake_neural)
    out = tmp_path / "r"
    assert run_cli("--what", "neural", "--out", out) == 130
    assert json.loads((out / "run.json").read_text())["finished"] is False
    capsys.readouterr()
    assert run_cli("--what", "neural", "--out", out, "--quick") == 2  # other settings: not resumed into
    assert "holds an interrupted reproduce run with other settings" in _one_error_line(capsys)
    assert run_cli("--what", "neural", "--out", out) == 0
    assert f"resuming the interrupted run in {out}" in capsys.readouterr().out
    assert calls == [False, False]  # the refused --quick run never started the chain
    assert (out / "neural" / "round1.txt").exists() and (out / "neural" / "round2.txt").exists()
    assert json.loads((out / "run.json").read_text())["finished"] is True


def test_a_full_disk_is_one_line_naming_the_folder(tmp_path, run_cli, capsys, monkeypatch):
    real_fsync, calls = os.fsync, []

    def full_disk(fd):
        calls.append(fd)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    out = tmp_path / "r"
    assert run_cli("--what", "kernel", "--out", out) == 2
    err = _one_error_line(capsys)
    assert f"--out {out}: no space left on device" in err and "run the same command again to resume" in err
    assert not list(out.rglob("*.tmp"))
