"""The shared atomic writers: finished files are never half-written, JSON stays strict."""

import json
import math

import pytest

from selfdistill.atomic import atomic_write_csv, atomic_write_json, atomic_write_text


def test_json_is_strict_with_non_finite_numbers_as_null(tmp_path):
    path = atomic_write_json(tmp_path / "a" / "r.json", {"x": [1.5, math.nan, (math.inf, 2)], "y": -math.inf})
    assert json.loads(path.read_text()) == {"x": [1.5, None, [None, 2]], "y": None}
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()


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
