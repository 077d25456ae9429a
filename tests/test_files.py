"""gstutorial.files.atomic_write: a file is written whole or not at all, with a plain write's permissions."""

from __future__ import annotations

import os
import stat

import pytest

from gstutorial.files import atomic_write


def test_atomic_write_writes_through_a_temporary_file_and_returns_the_path(tmp_path):
    seen = []

    def write(tmp):
        seen.append(tmp)
        tmp.write_text("data")

    path = atomic_write(str(tmp_path / "out.txt"), write)       # a str path is accepted
    assert path == tmp_path / "out.txt" and path.read_text() == "data"
    # the writer got another file in the same folder (so the rename is atomic), now gone
    assert seen[0] != path and seen[0].parent == tmp_path and not seen[0].exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_creates_missing_folders(tmp_path):
    path = atomic_write(tmp_path / "a" / "b" / "out.txt", lambda tmp: tmp.write_text("x"))
    assert path.read_text() == "x"


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, error):
    path = tmp_path / "out.txt"
    path.write_text("old")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise error

    with pytest.raises(type(error)):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with pytest.raises(type(error)):
        atomic_write(tmp_path / "new.txt", half_then_fail)
    assert not (tmp_path / "new.txt").exists()                  # none rather than a half-written one


def test_atomic_write_gives_the_permissions_of_a_plain_write(tmp_path):
    old_umask = os.umask(0o022)
    try:
        new = atomic_write(tmp_path / "new.txt", lambda tmp: tmp.write_text("a"))
        assert stat.S_IMODE(new.stat().st_mode) == 0o644  # not mkstemp's private 0o600
        os.umask(0o077)
        assert stat.S_IMODE(atomic_write(tmp_path / "private.txt", lambda tmp: tmp.write_text("b"))
                            .stat().st_mode) == 0o600
        new.chmod(0o640)  # a file that is replaced keeps its own permissions
        atomic_write(new, lambda tmp: tmp.write_text("c"))
        assert new.read_text() == "c" and stat.S_IMODE(new.stat().st_mode) == 0o640
    finally:
        os.umask(old_umask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.txt", "private.txt"]
