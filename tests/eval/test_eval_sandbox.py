"""The sandbox for generated code: each misbehaving program fails its own run and harms nothing."""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from mixinputs.eval.sandbox import Limits, run_python

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox targets Linux")
QUICK = Limits(timeout_s=5, cpu_s=2, memory_mb=512)


def test_a_correct_program_passes_and_sees_its_stdin():
    run = run_python("import sys\nprint(sum(map(int, sys.stdin.read().split())))", stdin="1 2 3")
    assert run.ok and run.stdout == "6\n" and run.returncode == 0


def test_a_failing_program_fails():
    run = run_python("assert 1 + 1 == 3, 'wrong'")
    assert not run.ok and run.returncode == 1 and "AssertionError: wrong" in run.stderr


def test_an_infinite_loop_is_stopped_by_the_cpu_limit():
    started = time.monotonic()
    run = run_python("while True:\n    pass", limits=QUICK)
    assert not run.ok and not run.timed_out  # killed by RLIMIT_CPU (SIGXCPU), not the clock
    assert run.returncode < 0
    assert time.monotonic() - started < 30


def test_a_sleeping_program_is_stopped_by_the_wall_clock():
    run = run_python("import time\ntime.sleep(600)", limits=Limits(timeout_s=1.5, cpu_s=5))
    assert run.timed_out and not run.ok and run.returncode is None


def test_a_fork_bomb_is_refused():
    # Bounded: at most 2**6 processes even if every fork succeeded.
    bomb = "import os\nfor _ in range(6):\n    os.fork()\nprint('forked')"
    run = run_python(bomb, limits=QUICK)
    assert not run.ok and "forked" not in run.stdout
    assert "os.fork is disabled" in run.stderr
    for code in ("import subprocess\nsubprocess.run(['true'])", "import os\nos.system('true')"):
        assert not run_python(code, limits=QUICK).ok


def test_processes_left_behind_are_killed_with_the_group(tmp_path):
    # A program that gets past the interpreter's guard (libc fork through ctypes) leaves a child
    # that would sleep for an hour; the whole process group dies with the run.
    code = textwrap.dedent(
        """
        import ctypes, os, time
        pid = ctypes.CDLL(None).fork()
        if pid == 0:
            time.sleep(3600)
        else:
            print(pid)
        """
    )
    run = run_python(code, limits=QUICK)
    assert run.ok, run.stderr
    child = int(run.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, just not reaped


def test_a_huge_allocation_fails_inside_the_program():
    for code in ("x = bytearray(8 * 1024**3)", "x = [0] * 10**9", "x = 'y' * 10**10"):
        run = run_python(code, limits=QUICK)
        assert not run.ok and "MemoryError" in run.stderr


def test_writing_outside_the_scratch_directory_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    for code in (
        f"open({str(victim)!r}, 'w').write('x')",
        f"import os\nos.open({str(victim)!r}, os.O_WRONLY | os.O_CREAT)",
        f"import pathlib\npathlib.Path({str(victim)!r}).write_text('x')",
        f"import os\nos.remove({str(tmp_path / 'keep.txt')!r})",
    ):
        (tmp_path / "keep.txt").write_text("keep")
        run = run_python(code, limits=QUICK)
        assert not run.ok and "PermissionError" in run.stderr
        assert not victim.exists() and (tmp_path / "keep.txt").read_text() == "keep"
    # Inside its own directory it may write; the directory is gone afterwards.
    run = run_python("import os\nopen('out.txt', 'w').write('ok')\nprint(os.getcwd())")
    assert run.ok and not Path(run.stdout.strip()).exists()


def test_a_big_file_or_endless_output_is_cut_by_the_file_size_limit():
    big = run_python("open('big', 'wb').write(b'x' * 64 * 1024 * 1024)", limits=QUICK)
    assert not big.ok and "File too large" in big.stderr
    spam = run_python("while True:\n    print('x' * 1000)", limits=QUICK)
    assert not spam.ok and len(spam.stdout) <= 64_000


def test_no_network():
    with socket.socket() as server:  # a real listener on the host's loopback
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.2)
        port = server.getsockname()[1]
        accepted = []

        def accept():
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                try:
                    accepted.append(server.accept()[0])
                except OSError:
                    continue

        watcher = threading.Thread(target=accept)
        watcher.start()
        plain = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)"
        run = run_python(plain, limits=QUICK)
        assert not run.ok and "network access is disabled" in run.stderr
        # Past the interpreter's guard: raw libc calls; only a network namespace stops these.
        raw = textwrap.dedent(
            f"""
            import ctypes, socket, struct
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.socket(2, 1, 0)
            addr = struct.pack("<HH4s8x", 2, socket.htons({port}), bytes([127, 0, 0, 1]))
            buf = ctypes.create_string_buffer(addr)
            assert libc.connect(fd, buf, len(addr)) == 0, ctypes.get_errno()
            """
        )
        isolated = _own_network_namespace()
        raw_run = run_python(raw, limits=QUICK)
        watcher.join()
        for conn in accepted:
            conn.close()
    assert not accepted or not isolated
    if isolated:
        assert not raw_run.ok


def _own_network_namespace() -> bool:
    here = os.readlink("/proc/self/ns/net")
    run = run_python("import os\nprint(os.readlink('/proc/self/ns/net'))")
    return run.ok and run.stdout.strip() != here


def test_the_environment_is_stripped(monkeypatch):
    monkeypatch.setenv("MIXINPUTS_SECRET", "do-not-leak")
    run = run_python("import os, sys\nprint(sorted(os.environ))\nprint(sys.flags.isolated)")
    assert run.ok
    names, isolated = run.stdout.splitlines()
    assert "MIXINPUTS_SECRET" not in names and isolated == "1"
