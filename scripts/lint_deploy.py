"""Runs hadolint and checkov over what an operator deploys and judges their findings against
scripts/lint-skips: a finding that no skip covers fails, and so does a skip that no finding
needs any more (it would hide the next finding of that rule). Called by scripts/lint-deploy,
which renders the overlays first; stdlib only, so any Python 3 runs it.

    python3 scripts/lint_deploy.py SKIPS HADOLINT CHECKOV DOCKERFILE RENDER.yaml...
"""

import json
import subprocess
import sys
from pathlib import Path

TOOLS = ("hadolint", "checkov")


def read_skips(path, scans):
    """{(tool, rule, scan): reason}, refusing a line without a reason or with an unknown name."""
    skips, errors = {}, []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(None, 3)
        if len(fields) < 4:
            errors.append(f"line {number}: a skip is: tool rule scan reason")
            continue
        tool, rule, scan, reason = fields
        if tool not in TOOLS:
            errors.append(f"line {number}: unknown tool {tool!r} (one of {', '.join(TOOLS)})")
        if scan != "*" and scan not in scans:
            errors.append(f"line {number}: unknown scan {scan!r} (one of {', '.join(scans)}, *)")
        skips[(tool, rule, scan)] = reason
    if errors:
        sys.exit("scripts/lint-skips:\n  " + "\n  ".join(errors))
    return skips


def run_json(command):
    """The tool's JSON report; its exit code says only that it found something."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        sys.exit(f"{command[0]} gave no report (exit {done.returncode}):\n{done.stderr[-2000:]}")


def hadolint(binary, dockerfile):
    """[(rule, where, message)] for every finding, whatever its level."""
    report = run_json([binary, "--no-color", "--no-fail", "--format", "json", dockerfile])
    return [(f["code"], f"{f['file']}:{f['line']}", f["message"]) for f in report]


def checkov(binary, framework, path):
    """[(rule, where, message)] and the number of checks that passed, for one file."""
    report = run_json(
        [binary, "--skip-download", "--output", "json", "--framework", framework, "--file", path]
    )
    if isinstance(report, list):  # one report per framework; we ask for one
        report = next((r for r in report if r.get("check_type") == framework), {})
    summary = report.get("summary", {})
    if not report.get("results") or summary.get("parsing_errors"):
        sys.exit(f"checkov checked nothing in {path} ({summary})")
    findings = [
        (
            f["check_id"],
            f"{f['resource']} ({Path(path).name}:{f['file_line_range'][0]})",
            f["check_name"],
        )
        for f in report["results"]["failed_checks"]
    ]
    return findings, summary["passed"]


def main():
    skips_path, hadolint_bin, checkov_bin, dockerfile, *renders = sys.argv[1:]
    render_scans = {Path(r).stem: r for r in renders}
    scans = ["Dockerfile", *render_scans]
    skips = read_skips(skips_path, scans)

    found = {}  # (tool, scan) -> findings
    found[("hadolint", "Dockerfile")] = hadolint(hadolint_bin, dockerfile)
    passed = {}
    found[("checkov", "Dockerfile")], passed["Dockerfile"] = checkov(
        checkov_bin, "dockerfile", dockerfile
    )
    for scan, path in render_scans.items():
        found[("checkov", scan)], passed[scan] = checkov(checkov_bin, "kubernetes", path)

    failures, used = [], set()
    print(f"  {'tool':<9} {'scan':<12} {'passed':>6} {'skipped':>7} {'failed':>6}")
    for (tool, scan), findings in found.items():
        skipped = failed = 0
        for rule, where, message in findings:
            key = next((k for k in ((tool, rule, scan), (tool, rule, "*")) if k in skips), None)
            if key:
                used.add(key)
                skipped += 1
            else:
                failed += 1
                failures.append(f"{tool} {rule} on {scan}: {where}: {message}")
        shown = passed.get(scan, "-") if tool == "checkov" else "-"
        print(f"  {tool:<9} {scan:<12} {shown:>6} {skipped:>7} {failed:>6}")
    stale = [
        f"{tool} {rule} on {scan}" for (tool, rule, scan) in skips if (tool, rule, scan) not in used
    ]
    for failure in failures:
        print(f"FINDING: {failure}", file=sys.stderr)
    for skip in stale:
        print(f"STALE SKIP: {skip} fires no more; drop it from lint-skips", file=sys.stderr)
    if failures or stale:
        sys.exit(f"lint-deploy: {len(failures)} finding(s), {len(stale)} stale skip(s)")
    print(f"  every finding is one of the {len(skips)} skips in scripts/lint-skips")


if __name__ == "__main__":
    main()
