"""Run the test stages of `make test` in order, time each, and summarise.

Each stage prints its own output, then one line of figures. The run ends
with a table of times and one `stage: N passed, N failed` line per stage,
then a `total:` line. A stage that fails, or that ran no test, fails the run.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "output"
VENV_BIN = ROOT / ".venv" / "bin"


def run(cmd, cwd=ROOT, env=None, log=None):
    """Run a command, stream its output, and return (rc, output)."""
    full_env = dict(os.environ)
    full_env["PATH"] = "%s:%s" % (VENV_BIN, full_env.get("PATH", ""))
    full_env.update(env or {})
    print("+ " + " ".join(str(c) for c in cmd), flush=True)
    proc = subprocess.Popen([str(c) for c in cmd], cwd=str(cwd), env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    proc.wait()
    output = "".join(lines)
    if log:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(output)
    return proc.returncode, output


def junit_counts(path):
    """(passed, failed, skipped) from a JUnit XML file written by pytest."""
    root = ET.parse(str(path)).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    tests = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    return tests - failed - skipped, failed, skipped


def collection_tree(build):
    """Copy the git-visible files to <build>/ansible_collections/failsafe/recovery.

    ansible-test resolves symlinks and insists on working inside a real
    ansible_collections/<ns>/<name> directory, so the checkout is copied
    (well under a second) and the dependency collections are linked beside it.
    """
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=str(ROOT), capture_output=True, check=True).stdout.split(b"\0")
    tree = build / "ansible_collections" / "failsafe" / "recovery"
    for name in files:
        if not name:
            continue
        rel = name.decode()
        src = ROOT / rel
        if not src.is_file():
            continue
        dst = tree / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    deps = ROOT / ".collections" / "ansible_collections"
    for ns_dir in deps.iterdir():
        if ns_dir.name == "failsafe":
            continue
        for coll in ns_dir.iterdir():
            link = build / "ansible_collections" / ns_dir.name / coll.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(coll.resolve())
    return tree


def stage_lint():
    rc, out = run(["ansible-lint", "--profile", "production", "--offline", "--nocolor"], log=OUT / "lint.log", env={"NO_COLOR": "1"})
    match = re.search(r"(\d+) failure\(s\), (\d+) warning\(s\) (?:in|on) (\d+) files", out)
    if not match:
        return 0, 1, 0
    failures, files = int(match.group(1)), int(match.group(3))
    if rc != 0 and failures == 0:
        failures = 1
    return files - min(failures, files), failures, 0


def stage_sanity():
    # A scratch copy outside the checkout (inside it, ansible-test would ask git
    # and see only ignored files), one per run so parallel runs never collide.
    build = pathlib.Path(tempfile.mkdtemp(prefix="failsafe-recovery-sanity-"))
    try:
        tree = collection_tree(build)
        rc, out = run(["ansible-test", "sanity", "--venv", "--python", "3.11", "--color", "no"], cwd=tree,
                      log=OUT / "sanity.log")
    finally:
        shutil.rmtree(build, ignore_errors=True)
    ran = set(re.findall(r'^Running sanity test "([^"]+)"', out, re.M))
    failed = re.search(r"The (\d+) sanity test\(s\) listed below \(out of (\d+)\) failed", out)
    n_failed = int(failed.group(1)) if failed else (1 if rc else 0)
    skipped = len(re.findall(r"^WARNING: Skipping sanity test", out, re.M))
    return len(ran) - n_failed, n_failed, skipped


def pytest_stage(name, path, extra=()):
    xml = OUT / ("%s.xml" % name)
    xml.parent.mkdir(parents=True, exist_ok=True)
    if xml.exists():
        xml.unlink()
    rc = run(["pytest", str(path), "-q", "--junitxml", str(xml)] + list(extra))[0]
    if not xml.exists():
        return 0, 1, 0
    passed, failed, skipped = junit_counts(xml)
    if rc not in (0, 5) and failed == 0:
        failed = 1
    return passed, failed, skipped


def stage_unit():
    return pytest_stage("unit", "tests/unit")


def stage_integration():
    return pytest_stage("integration", "tests/integration")


def stage_molecule():
    rc, out = run(["bash", "scripts/molecule.sh"], log=OUT / "molecule.log")
    passed = len(re.findall(r"^molecule \S+: PASS", out, re.M))
    failed = len(re.findall(r"^molecule \S+: FAIL", out, re.M))
    if rc != 0 and failed == 0:
        failed = 1
    return passed, failed, 0


STAGES = {
    "lint": stage_lint,
    "sanity": stage_sanity,
    "unit": stage_unit,
    "integration": stage_integration,
    "molecule": stage_molecule,
}


def main(names):
    results = []
    for name in names:
        print("\n=== stage %s ===" % name, flush=True)
        start = time.monotonic()
        passed, failed, skipped = STAGES[name]()
        seconds = time.monotonic() - start
        print("=== stage %s: %d passed, %d failed, %d skipped in %.1f s ===" % (name, passed, failed, skipped, seconds),
              flush=True)
        results.append((name, passed, failed, skipped, seconds))
    print("\nstage        seconds")
    for result in results:
        print("%-12s %7.1f" % (result[0], result[4]))
    bad = []
    for name, passed, failed, skipped, _seconds in results:
        print("%s: %d passed, %d failed, %d skipped" % (name, passed, failed, skipped))
        if failed or passed == 0:
            bad.append(name)
    print("total: %d passed, %d failed" % (sum(r[1] for r in results), sum(r[2] for r in results)))
    if bad:
        print("FAILED stages (failures or no test ran): %s" % ", ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    unknown = [a for a in sys.argv[1:] if a not in STAGES]
    if unknown or not sys.argv[1:]:
        sys.exit("usage: stages.py %s ..." % "|".join(STAGES))
    sys.exit(main(sys.argv[1:]))
