"""Atomic outputs: a result file or folder exists complete, or not at all."""

from __future__ import annotations

import pytest

from joulebench.io import atomic_directory, atomic_write_json


def test_a_folder_appears_only_when_complete(tmp_path):
    target = tmp_path / "adapter"
    with atomic_directory(target) as staging:
        (staging / "weights.bin").write_bytes(b"1")
        assert not target.exists()
    assert (target / "weights.bin").read_bytes() == b"1"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_a_failed_folder_leaves_nothing_and_keeps_the_old_one(tmp_path):
    target = tmp_path / "adapter"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(target) as staging:
        (staging / "half").write_text("half")
        raise RuntimeError("killed while saving")
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"] and (target / "old").exists()


def test_a_file_write_that_fails_leaves_no_temporary(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "record.json", {"not serialisable": object()})
    assert list(tmp_path.iterdir()) == []
