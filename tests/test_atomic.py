"""The shared atomic-write helper: a failed write leaves the old file and no temporary behind."""
import os

import pytest

from maskedbert._atomic import atomic_path, write_text_atomic


def test_write_replaces_and_creates_folders(tmp_path):
    target = tmp_path / "a" / "b" / "out.json"
    write_text_atomic(target, "first")
    write_text_atomic(target, "second")
    assert target.read_text() == "second"
    assert os.listdir(target.parent) == ["out.json"]


def test_failed_write_keeps_old_file_and_removes_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk"):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_suffix_is_kept_for_format_sniffing_writers(tmp_path):
    with atomic_path(tmp_path / "plot.png", suffix=".png") as tmp:
        assert tmp.endswith(".png")
        open(tmp, "wb").close()
    assert (tmp_path / "plot.png").exists()


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_get_the_mode_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        plain = tmp_path / f"plain-{umask:o}.txt"
        with open(plain, "w") as f:
            f.write("x")
        atomic = tmp_path / f"atomic-{umask:o}.txt"
        write_text_atomic(atomic, "x")
    finally:
        os.umask(old)
    assert (atomic.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777) == (0o666 & ~umask)
