"""tinyllm.atomic: the one way every file is written."""

import os

import pytest

from tinyllm import atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "weights.bin"
    atomic.write_bytes(path, b"old")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic.atomic_open(path) as f:
            f.write(b"half of the new")
            raise RuntimeError("crash mid-write")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]


def test_new_files_are_world_readable_and_replacements_keep_their_mode(tmp_path):
    path = tmp_path / "a.json"
    atomic.write_text(path, "{}")
    assert os.stat(path).st_mode & 0o777 == 0o644
    os.chmod(path, 0o600)
    atomic.write_text(path, "[]")
    assert path.read_text() == "[]" and os.stat(path).st_mode & 0o777 == 0o600


def test_folders_are_refused_by_name(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        atomic.write_text(tmp_path, "x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic.write_text(tmp_path / "missing" / "a.txt", "x")
