from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from darcyvae._lock import LOCK_NAME, folder_lock
from darcyvae.errors import FolderLockedError


def test_second_lock_in_same_process_is_refused(tmp_path):
    with folder_lock(tmp_path / "run", "first") as f:
        assert f.name == LOCK_NAME
        refused = pytest.raises(FolderLockedError, match=r"in use by pid \d+ .*running 'first'")
        with refused, folder_lock(tmp_path / "run", "second"):
            pass
    # released: a new holder gets it
    with folder_lock(tmp_path / "run", "third"):
        pass


def test_lock_held_by_another_process_and_released_on_kill(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys, time
        from darcyvae._lock import folder_lock
        with folder_lock({str(tmp_path)!r}, "holder"):
            print("locked", flush=True)
            time.sleep(60)
        """
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout.readline().strip() == "locked"
            refused = pytest.raises(FolderLockedError, match=f"pid {proc.pid}")
            with refused, folder_lock(tmp_path, "me"):
                pass
        finally:
            proc.kill()
            proc.wait()
    with folder_lock(tmp_path, "me"):  # the kernel dropped the dead holder's lock
        pass
