"""verify.sh's report: $OUT/verify.json from the stage table, the junit files, the benchmarks'
JSON and the engines' logs. Standard library only (it also runs where vLLM does not import).

    python3 benchmarks/gpu/verify_report.py WORK OUT [--stages 1,2] [--dry-run 0|1]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

# Lines in the engines' logs that show what ran (counted per stage log): vLLM 0.26.0's own
# messages (gpu_model_runner.py / gpu/model_runner.py, platforms/cuda.py, config/vllm.py,
# gpu_worker.py, compilation/monitor.py) and the plugin's.
EVIDENCE = {
    "graphs_captured": r"Graph capturing finished",
    "cudagraph_mode": r"cudagraph_mode=",
    "triton_attention": r"Using (AttentionBackendEnum\.)?TRITON_ATTN backend",
    "async_scheduling": r"Asynchronous scheduling is enabled",
    "model_runner_v2": r"Using V2 Model Runner",
    "moi_ready": r"mixinputs: MoI ready",
    "moi_ready_on_v2": r"mixinputs: MoI ready on Model Runner V2",
    "moi_profiled": r"mixinputs: profiled MoI's worst step",
    "moi_off": r"mixinputs: MoI is off for this engine",
    "torch_compile": r"torch\.compile took",
}
# Tests that failed in the CPU rehearsals on the same random-weight model (2026-12-01, 2026-12-07):
# they need a trained model's behaviour (methods that pick different tokens, a new token within a
# few greedy steps, SwiReasoning's entropy switches away from near-ties, Cold Stop's real
# threshold firing on low-entropy steps), so a failure here says nothing about the GPU; each
# passes on the embedded model in the CPU suite. verify.json marks them.
KNOWN_ON_RANDOM_WEIGHTS = {
    "test_each_method_is_the_same_alone_and_in_a_batch_of_all",
    "test_thinking_region_ends_at_the_think_end_token",
    "test_the_engine_feeds_what_the_authors_rule_feeds[swir]",  # failed in one of two runs
    # Every row matched the release's transcription token for token; what failed is the last
    # check (Cold Stop's real threshold fired in 2 rows: once here) and, greedy, the search for a
    # new token after the 4th (the random model repeats one).
    "test_soft_thinking_follows_its_release[seeded]",
    "test_soft_thinking_follows_its_release[greedy]",
}
LOG_LIMIT = 15 << 20  # a file that comes back from the device machine is at most 16 MiB


def junit(path: Path) -> dict | None:
    if not path.is_file():
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    counts = {
        k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")
    }
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    failed = []
    for case in root.iter("testcase"):
        for bad in list(case.findall("failure")) + list(case.findall("error")):
            message = (bad.get("message") or bad.text or "").strip().splitlines()
            first = message[0][:300] if message else ""
            known = (
                " [known on random weights]" if case.get("name") in KNOWN_ON_RANDOM_WEIGHTS else ""
            )
            failed.append(f"{case.get('classname')}::{case.get('name')}: {first}{known}")
    counts["failed_tests"] = failed
    counts["time_s"] = round(sum(float(s.get("time", 0)) for s in suites), 1)
    return counts


def bench(path: Path) -> dict | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    keep = ("batch_size", "max_tokens", "method", "vanilla_tok_s", "standard_tok_s",
            "method_tok_s", "method_over_vanilla", "standard_over_vanilla",
            "method_over_standard", "intervals")  # fmt: skip
    return {
        "results": [{k: r[k] for k in keep if k in r} for r in data.get("results", [])],
        "plugin_memory": data.get("plugin_memory"),
        "engines": data.get("engines"),
        "meta": data.get("meta"),
    }


def mixing(path: Path) -> dict | None:
    """benchmarks/mixing_step.py's whole JSON (rows and meta): it is docs/benchmarks.md's table,
    and goes inside verify.json because a call brings back 8 files at most."""
    return json.loads(path.read_text()) if path.is_file() else None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("out")
    ap.add_argument("--stages", default="")
    ap.add_argument("--dry-run", default="0")
    args = ap.parse_args()
    work, out = Path(args.work), Path(args.out)
    stages = []
    table = work / "stages.tsv"
    for line in table.read_text().splitlines() if table.is_file() else []:
        sid, name, cap, rc, start, end, log = line.split("\t")
        entry = {"stage": int(sid), "name": name, "cap_s": int(cap), "log": Path(log).name}
        if rc == "skipped":
            entry["status"] = "skipped: no time left"
        else:
            entry["exit"] = int(rc)
            entry["wall_s"] = int(end) - int(start)
            entry["status"] = {0: "passed", 124: "timed out", 137: "killed at the cap"}.get(
                int(rc), "failed"
            )
        stages.append(entry)
    for entry in stages:
        if entry["name"].endswith("-engine") or entry["name"] == "gpu-tests":
            entry["tests"] = junit(work / f"junit-{entry['stage']}.xml")
        if entry["name"].startswith("bench-"):
            entry["bench"] = bench(out / f"{entry['name']}.json")
        if entry["name"] == "mixing-step":
            entry["mixing_step"] = mixing(work / "mixing-step.json")
    evidence = {}
    for log in sorted(out.glob("stage*.log")):
        text = log.read_text(errors="replace")
        evidence[log.name] = {k: len(re.findall(p, text)) for k, p in EVIDENCE.items()}
        if log.stat().st_size > LOG_LIMIT:  # keep the end, where the failures are
            log.write_text(text[-LOG_LIMIT:])

    def last_line(name: str) -> str | None:
        path = work / name
        lines = path.read_text().strip().splitlines() if path.is_file() else []
        return lines[-1] if lines else None

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "dry_run": args.dry_run == "1",
        "stages_asked": args.stages,
        "nvidia_smi": last_line("gpu.txt"),
        "versions": {
            "python": platform.python_version(),
            "torch_triton_transformers": last_line("versions.txt"),
            "vllm": last_line("vllm.txt"),
        },
        "stages": stages,
        "evidence": evidence,
    }
    (out / "verify.json").write_text(json.dumps(report, indent=1) + "\n")
    for e in stages:
        tests = e.get("tests") or {}
        counts = ""
        if tests:
            bad = tests["failures"] + tests["errors"]
            counts = f" {tests['passed']} passed, {bad} failed, {tests['skipped']} skipped"
        print(f"stage {e['stage']} {e['name']}: {e['status']}{counts} ({e.get('wall_s', 0)} s)")
        for f in tests.get("failed_tests", []):
            print(f"   {f}")
    print(f"verify.json written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
