"""Files of a running agent are this user's only."""
import os
import stat

import pytest

import lightray
from lightray.agent.session import UnsafeDirectoryError, private_dir


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_session_files_and_segments_are_private():
    lightray.init(num_cpus=1)
    try:
        ref = lightray.put(b"x" * (1 << 20))
        session_dir = lightray.api._runtime.session_dir
        assert _mode(session_dir) == 0o700
        for name in ("agent.sock", "agent.pid", "agent.json"):
            assert _mode(os.path.join(session_dir, name)) == 0o600, name
        session = lightray.api._runtime.session
        segments = [n for n in os.listdir("/dev/shm") if session in n]
        assert segments and all(_mode("/dev/shm/" + n) == 0o600 for n in segments)
        del ref
    finally:
        lightray.shutdown()


def test_a_directory_others_may_write_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(UnsafeDirectoryError, match="writable by other users"):
        private_dir(str(shared), "the lightray temp directory")
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(UnsafeDirectoryError, match="symbolic link"):
        private_dir(str(link), "the lightray temp directory")
