"""Running untrusted generated Python: one subprocess per program, bounded and thrown away.

What each run gets (``run_python``):

1. A fresh scratch directory as its working directory, removed afterwards; ``HOME`` and
   ``TMPDIR`` point into it.
2. A stripped environment (``PATH``, ``LANG``, ``HOME``, ``TMPDIR`` only) and ``python -I -S``:
   no ``PYTHON*`` variables, no user or site packages, no ``sitecustomize``.
3. Its own session (process group); on the wall-clock timeout the whole group is killed, and any
   process left in the group after a normal exit too.
4. Kernel limits set in the child before the program runs (``resource.setrlimit``):
   ``RLIMIT_CPU`` (CPU seconds), ``RLIMIT_AS`` (address space), ``RLIMIT_FSIZE`` (size of any file
   written, stdout and stderr included: they go to files), ``RLIMIT_NPROC`` (processes of this
   user; the kernel ignores it for root), ``RLIMIT_CORE`` = 0.
5. No network: its own empty network namespace when the kernel allows it (root, or unprivileged
   user namespaces), and in any case ``socket`` creation refused inside the interpreter.
6. Interpreter-level refusals: ``fork`` / ``exec`` / ``spawn`` / ``system`` / ``subprocess`` /
   ``os.kill``, and opening a file for writing (or removing / renaming one) outside the scratch
   directory.

The limits are set in a small bootstrap the child runs before the program (not in a
``preexec_fn``, which can deadlock when the parent has threads, as a vLLM engine does).

Honest scope: points 1-5 hold for any program. Point 6 is Python-level: code that uses
``ctypes`` to call libc directly can get around it (and around the ``socket`` refusal where no
network namespace was available), and the program runs as the calling user. That is enough for
the mistakes models make (loops, forks, huge allocations, stray writes); for code written to
attack the host, run the evaluation in a container or VM.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

OUTPUT_CHARS = 64_000  # what is kept of a program's stdout / stderr


@dataclass(frozen=True)
class Limits:
    """What one program may use. ``timeout_s`` is wall clock; the rest are kernel limits."""

    timeout_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    file_size_mb: int = 16
    processes: int = 64


@dataclass(frozen=True)
class Execution:
    returncode: int | None  # None: killed on the wall-clock timeout
    stdout: str
    stderr: str
    timed_out: bool

    @property
    def ok(self) -> bool:
        """Exited by itself with status 0."""
        return self.returncode == 0 and not self.timed_out


def run_python(source: str, stdin: str = "", limits: Limits | None = None) -> Execution:
    """Run ``source`` as ``__main__`` in a sandboxed interpreter (see the module doc).

    >>> run_python("print(sum(range(10)))").stdout
    '45\\n'
    >>> run_python("while True: pass", limits=Limits(timeout_s=1, cpu_s=1)).ok
    False
    """
    limits = limits or Limits()
    root = Path(tempfile.mkdtemp(prefix="mixinputs-sandbox-"))
    try:
        work = root / "work"
        work.mkdir()
        (work / "main.py").write_text(source)
        (root / "stdin").write_text(stdin)
        config = {"limits": asdict(limits), "work": str(work)}
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(work), "TMPDIR": str(work)}
        with (
            open(root / "stdin") as fin,
            open(root / "stdout", "wb") as fout,
            open(root / "stderr", "wb") as ferr,
        ):
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _BOOTSTRAP, json.dumps(config)],
                cwd=work,
                env=env,
                stdin=fin,
                stdout=fout,
                stderr=ferr,
                start_new_session=True,  # its own process group, killed as a whole
                close_fds=True,
            )
            timed_out = False
            try:
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(proc.pid)
            proc.wait()
        return Execution(
            None if timed_out else proc.returncode,
            _read(root / "stdout"),
            _read(root / "stderr"),
            timed_out,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _read(path: Path) -> str:
    with open(path, "rb") as f:
        return f.read(OUTPUT_CHARS).decode("utf-8", errors="replace")


# Runs in the child, before the program: kernel limits, network namespace, interpreter guards.
_BOOTSTRAP = r"""
import json, os, resource, sys
config = json.loads(sys.argv[1])
limits, work = config["limits"], config["work"]
sys.argv = ["main.py"]
MB = 1024 * 1024
for name, value in (
    ("RLIMIT_CPU", limits["cpu_s"]),
    ("RLIMIT_AS", limits["memory_mb"] * MB),
    ("RLIMIT_FSIZE", limits["file_size_mb"] * MB),
    ("RLIMIT_NPROC", limits["processes"]),
    ("RLIMIT_CORE", 0),
):
    if hasattr(resource, name):
        hard = value + 1 if name == "RLIMIT_CPU" else value  # SIGXCPU first, then SIGKILL
        try:
            resource.setrlimit(getattr(resource, name), (value, hard))
        except (ValueError, OSError):
            pass

def _no_network():
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.unshare(0x40000000)  # CLONE_NEWNET: a namespace with only a downed loopback
    except Exception:
        pass

_no_network()

def _refuse(what):
    def refused(*args, **kwargs):
        raise PermissionError(f"{what} is disabled in the mixinputs sandbox")
    return refused

import socket, _socket
for mod in (socket, _socket):
    for name in ("socket", "socketpair", "create_connection", "create_server", "fromfd"):
        if hasattr(mod, name):
            setattr(mod, name, _refuse("network access"))

for name in ("fork", "forkpty", "vfork", "system", "popen", "execv", "execve", "execvp",
             "execvpe", "execl", "execle", "execlp", "execlpe", "spawnv", "spawnve", "spawnvp",
             "spawnvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "posix_spawn",
             "posix_spawnp", "kill", "killpg", "setsid", "setpgid", "setpgrp"):
    if hasattr(os, name):
        setattr(os, name, _refuse(f"os.{name}"))
import subprocess
subprocess.Popen = _refuse("subprocess")
import _posixsubprocess
_posixsubprocess.fork_exec = _refuse("subprocess")

import builtins, io
_root = os.path.realpath(work) + os.sep
def _inside(path):
    try:
        if isinstance(path, int):
            return True  # an already open descriptor
        return os.path.realpath(os.fspath(path)).startswith(_root)
    except Exception:
        return False

_open = builtins.open
def _guarded_open(file, mode="r", *args, **kwargs):
    if any(c in mode for c in "wax+") and not _inside(file):
        raise PermissionError(f"writing outside the sandbox directory: {file!r}")
    return _open(file, mode, *args, **kwargs)
builtins.open = io.open = _guarded_open

_os_open = os.open
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
def _guarded_os_open(path, flags, *args, **kwargs):
    if flags & _WRITE and not _inside(path):
        raise PermissionError(f"writing outside the sandbox directory: {path!r}")
    return _os_open(path, flags, *args, **kwargs)
os.open = _guarded_os_open

def _guard_paths(name, count):
    original = getattr(os, name)
    def guarded(*args, **kwargs):
        for path in args[:count]:
            if not _inside(path):
                raise PermissionError(f"os.{name} outside the sandbox directory: {path!r}")
        return original(*args, **kwargs)
    setattr(os, name, guarded)

for name, count in (("remove", 1), ("unlink", 1), ("rmdir", 1), ("rename", 2), ("replace", 2),
                    ("mkdir", 1), ("makedirs", 1), ("chmod", 1), ("chown", 1), ("truncate", 1),
                    ("symlink", 2), ("link", 2), ("utime", 1)):
    if hasattr(os, name):
        _guard_paths(name, count)
import shutil
shutil.rmtree = _refuse("shutil.rmtree")
del _refuse, _guard_paths, _no_network, config, limits, name, count, mod

path = os.path.join(work, "main.py")
with _open(path) as f:
    code = compile(f.read(), path, "exec")
sys.path.insert(0, work)
namespace = {"__name__": "__main__", "__file__": path, "__builtins__": builtins}
exec(code, namespace)
"""
