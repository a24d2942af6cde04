"""The shared atomic writers: finished files are never half-written, JSON stays strict."""

import json
import math

import pytest

from selfdistill.io import (
    atomic_save_figure,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    from_jsonable,
)


def test_json_has_one_strict_policy_nan_null_inf_string_and_round_trips(tmp_path):
    import numpy as np

    obj = {"x": [1.5, math.nan, (math.inf, 2)], "y": -math.inf, 3: np.array([np.inf, 0.5])}
    obj["z"] = np.float32(2)
    path = atomic_write_json(tmp_path / "a" / "r.json", obj)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text)  # the standard library's strict reader
    assert loaded == {"x": [1.5, None, ["inf", 2]], "y": "-inf", "3": ["inf", 0.5], "z": 2.0}
    back = from_jsonable(loaded["x"])
    assert math.isnan(back[1]) and back[2] == [math.inf, 2] and from_jsonable(loaded["y"]) == -math.inf


def test_figures_are_written_atomically_and_a_failed_save_keeps_the_old_file(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = atomic_save_figure(fig, tmp_path / "f.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    old = path.read_bytes()
    with pytest.raises(TypeError):
        atomic_save_figure(fig, path, format_that_does_not_exist=1)
    assert path.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == ["f.png"]
    plt.close(fig)


def test_csv_keeps_full_float_precision_and_column_order(tmp_path):
    value = 0.1 + 0.2
    path = atomic_write_csv(tmp_path / "t.csv", [{"b": value, "a": 1}], ["a", "b"])
    header, row = path.read_text().splitlines()
    assert header == "a,b" and float(row.split(",")[1]) == value


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = atomic_write_text(tmp_path / "f.txt", "old")
    with pytest.raises(TypeError):
        atomic_write_json(path, {"not serializable": object()})
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


# ------------------------------------------------------------------------------------------- run folders

import os  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

from selfdistill.io import RunFolder, RunFolderBusy  # noqa: E402


def test_a_second_run_is_refused_while_the_first_holds_the_folder_and_the_message_names_it(
    tmp_path, hold_folder
):
    out = tmp_path / "run"
    proc = hold_folder(out)
    with pytest.raises(RunFolderBusy, match=str(out)) as info:
        RunFolder(out).acquire()
    assert f"pid {proc.pid}" in str(info.value) and "\n" not in str(info.value)


def test_a_killed_owner_leaves_no_stale_lock(tmp_path, hold_folder):
    out = tmp_path / "run"
    proc = hold_folder(out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 5
    while True:  # the kernel drops the lock with the process
        try:
            with RunFolder(out) as folder:
                assert folder.held
            break
        except RunFolderBusy:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_two_owners_in_one_process_conflict_and_release_frees_the_folder(tmp_path):
    first = RunFolder(tmp_path / "run").acquire()
    with pytest.raises(RunFolderBusy):
        RunFolder(tmp_path / "run").acquire()
    first.release()
    with RunFolder(tmp_path / "run") as second:
        assert second.held
    assert not second.held


def test_clear_empties_the_folder_but_keeps_the_lock(tmp_path):
    out = tmp_path / "run"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "a.png").write_text("x")
    (out / "rounds.csv").write_text("x")
    with RunFolder(out) as folder:
        assert not folder.is_empty()
        folder.clear()
        assert folder.is_empty() and folder.held
        with pytest.raises(RunFolderBusy):
            RunFolder(out).acquire()
    with pytest.raises(RuntimeError, match="acquire"):
        RunFolder(out).clear()


def test_a_file_or_an_unwritable_place_is_refused_with_one_line(tmp_path):
    afile = tmp_path / "f.txt"
    afile.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        RunFolder(afile).acquire()
    with pytest.raises(ValueError, match="cannot create the output folder"):
        RunFolder(afile / "below").acquire()
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "ro"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(ValueError, match="not writable"):
                RunFolder(locked / "x").acquire()
        finally:
            locked.chmod(0o700)


def test_refuse_if_not_empty_names_the_folder_its_entries_and_the_fix(tmp_path):
    out = tmp_path / "run"
    with RunFolder(out) as folder:
        folder.refuse_if_not_empty("use --overwrite")  # only the lock's bookkeeping: empty
        (out / "rounds.csv").write_text("x")
        expected = r"^--out .*run is not empty \(it holds rounds.csv\); use --overwrite$"
        with pytest.raises(ValueError, match=expected):
            folder.refuse_if_not_empty("use --overwrite")


def test_abandon_removes_only_a_folder_this_run_created_and_left_empty(tmp_path):
    created = RunFolder(tmp_path / "new" / "run").acquire()
    assert created.created
    created.abandon()
    assert not (tmp_path / "new" / "run").exists() and not created.held
    with RunFolder(tmp_path / "new" / "run") as again:  # the path is free again
        assert again.held
    existing = tmp_path / "existing"
    existing.mkdir()
    folder = RunFolder(existing).acquire()
    assert not folder.created
    folder.abandon()
    assert existing.is_dir()
    written = RunFolder(tmp_path / "written").acquire()
    (tmp_path / "written" / "result.json").write_text("{}")
    written.abandon()
    assert (tmp_path / "written" / "result.json").exists() and not written.held


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ENOSPC", "no space left on device while writing x.json; free space on that disk or choose another"),
        ("EDQUOT", "quota exceeded while writing x.json; free space on that disk or choose another --out"),
        ("EROFS", "read-only file system while writing x.json; the file system is read-only; choose another"),
    ],
)
def test_writing_turns_a_full_disk_into_one_line_naming_the_folder(tmp_path, code, expected):
    import errno

    with RunFolder(tmp_path / "run") as folder:
        with pytest.raises(ValueError) as info:
            with folder.writing(rerun="then run again with --overwrite"):
                number = getattr(errno, code)
                raise OSError(number, os.strerror(number), "x.json")
    message = str(info.value)
    assert message.startswith(f"--out {tmp_path / 'run'}: ") and "\n" not in message
    assert expected in message.lower() and message.endswith(", then run again with --overwrite")
    with RunFolder(tmp_path / "run") as folder, pytest.raises(FileNotFoundError):
        with folder.writing():  # other OS errors are not disk errors: unchanged
            raise FileNotFoundError(2, "No such file or directory", "y")


def test_overwrite_never_empties_a_folder_that_selfdistill_did_not_write(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with RunFolder(home) as folder:
        with pytest.raises(ValueError, match="holds files that no selfdistill run wrote") as info:
            folder.clear()
        assert "thesis.tex" in str(info.value) and "\n" not in str(info.value)
    assert (home / "thesis.tex").read_text() == "years of work"
    old_results = tmp_path / "results"  # written before the marker existed: recognized by its files
    old_results.mkdir()
    (old_results / "config.yaml").write_text("name: x")
    (old_results / "plot.png").write_text("x")
    with RunFolder(old_results) as folder:
        folder.clear()
        assert folder.is_empty()
    run = tmp_path / "run"  # a folder a run created: later runs may empty it
    with RunFolder(run):
        (run / "anything.bin").write_text("x")
    with RunFolder(run) as folder:
        folder.clear()
        assert folder.is_empty()
