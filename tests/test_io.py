"""Tests for lpd.io: atomic writes that never clobber, the shipped data, its records."""

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from lpd import io
from lpd.io import atomic_write


def test_writes_text_bytes_and_callables(tmp_path):
    atomic_write(tmp_path / "a.txt", "héllo")
    atomic_write(tmp_path / "b.bin", b"\x00\x01")
    atomic_write(tmp_path / "sub" / "c.npz", lambda f: np.savez(f, x=np.arange(3)))
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert np.load(tmp_path / "sub" / "c.npz")["x"].tolist() == [0, 1, 2]


def test_refuses_to_overwrite_unless_told(tmp_path):
    path = tmp_path / "results.csv"
    atomic_write(path, "first")
    with pytest.raises(FileExistsError, match="results.csv"):
        atomic_write(path, "second")
    assert path.read_text() == "first"
    atomic_write(path, "second", overwrite=True)
    assert path.read_text() == "second"


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    path = tmp_path / "weights.npz"
    atomic_write(path, "old", overwrite=True)

    def fail(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, fail, overwrite=True)
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["weights.npz"]


def test_files_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "x.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_shipped_is_the_data_directory_beside_the_package():
    import lpd

    root = Path(lpd.__file__).resolve().parents[1] / "data"
    assert io.shipped() == root
    assert io.shipped("weights", "ellipses") == root / "weights" / "ellipses"


def test_read_record_names_the_file_the_command_and_the_owner(tmp_path):
    path = tmp_path / "record.json"
    with pytest.raises(FileNotFoundError, match="no tuned things at .*record.json.*`make it`"):
        io.read_record(path, what="tuned things", make="make it")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON record of tuned things"):
        io.read_record(path, what="tuned things", make="make it")
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="holds a list"):
        io.read_record(path, what="tuned things", make="make it")
    path.write_text(json.dumps({"setup": "a", "x": 1}))
    assert io.read_record(path, what="tuned things", make="make it", setup="a")["x"] == 1
    with pytest.raises(ValueError, match="tuned things of set-up 'a', not 'b'"):
        io.read_record(path, what="tuned things", make="make it", setup="b")
    # The set-up of a record of parameters is read from inside them.
    path.write_text(json.dumps({"params": {"setup": "b"}}))
    assert io.read_record(path, what="tuned things", make="make it", setup="b")
