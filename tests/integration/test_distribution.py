"""Distribution: the built tarball is what operators run.

The collection is built once, installed into an empty collections path next to the dependency
collections (never the checkout link), and every playbook is run by FQCN from a directory outside
the checkout, without the project's ansible.cfg. The execution environment definition turns into an
ansible-builder build context with this tarball in it.
"""

import json
import os
import pathlib
import random
import shutil
import subprocess

import pytest
import yaml

from sandbox.runner import ROOT, ansible_env

GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
TARBALL_NAME = "failsafe-recovery-%s.tar.gz" % GALAXY["version"]
VENV_PYTHON = str(ROOT / ".venv" / "bin" / "python")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(work dir outside the checkout, env, tarball): the tarball installed into an empty path."""
    work = tmp_path_factory.mktemp("dist")
    env = ansible_env()
    env.pop("ANSIBLE_CONFIG")
    env.pop("ANSIBLE_LOCAL_TEMP")
    build = subprocess.run(["ansible-galaxy", "collection", "build", "--force", "--output-path", str(work / "dist"), str(ROOT)],
                           env=env, capture_output=True, text=True, check=False, cwd=str(work), timeout=120)
    assert build.returncode == 0, build.stderr
    tarball = work / "dist" / TARBALL_NAME
    assert tarball.is_file(), sorted(os.listdir(work / "dist"))

    clean = work / "clean"
    # Without this the install sees the checkout link in .collections and does nothing.
    env["ANSIBLE_COLLECTIONS_PATH"] = str(clean)
    install = subprocess.run(["ansible-galaxy", "collection", "install", "--no-deps", "--force", "-p", str(clean), str(tarball)],
                             env=env, capture_output=True, text=True, check=False, cwd=str(work), timeout=120)
    assert install.returncode == 0, install.stderr

    # Dependency collections as a second path: every namespace of .collections except this collection's link.
    deps = work / "deps" / "ansible_collections"
    deps.mkdir(parents=True)
    for namespace in (ROOT / ".collections" / "ansible_collections").iterdir():
        if namespace.name != "failsafe" and namespace.is_dir():
            (deps / namespace.name).symlink_to(namespace.resolve())
    env.update({"ANSIBLE_COLLECTIONS_PATH": "%s:%s" % (clean, work / "deps"),
                "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
                "ANSIBLE_PYTHON_INTERPRETER": VENV_PYTHON,
                "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
                "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
                "ANSIBLE_SHOW_CUSTOM_STATS": "true"})
    run_dir = work / "run"
    run_dir.mkdir()
    return run_dir, env, tarball, clean / "ansible_collections" / "failsafe" / "recovery"


def _playbook(args, run_dir, env, timeout=120):
    return subprocess.run(["ansible-playbook"] + args, cwd=str(run_dir), env=env, capture_output=True, text=True,
                          check=False, timeout=timeout)


def test_collection_resolves_from_the_tarball_not_the_checkout(installed):
    run_dir, env, _tarball, path = installed
    out = subprocess.run(["ansible-galaxy", "collection", "list", "failsafe.recovery", "--format", "json"], cwd=str(run_dir),
                         env=env, capture_output=True, text=True, check=True, timeout=60).stdout
    found = json.loads(out)
    assert list(found) == [str(path.parent.parent)], found
    assert not path.is_symlink() and (path / "MANIFEST.json").is_file()
    assert ROOT not in pathlib.Path(run_dir).resolve().parents


def test_every_playbook_passes_syntax_check_by_fqcn(installed):
    run_dir, env, _tarball, path = installed
    shipped = sorted(p.stem for p in (path / "playbooks").glob("*.yml"))
    assert shipped == sorted(p.stem for p in (ROOT / "playbooks").glob("*.yml"))
    assert "backup_verify" in shipped

    # One ansible-playbook process checks them all (it names the playbook that fails).
    proc = _playbook(["failsafe.recovery." + name for name in shipped] + ["--syntax-check", "-i", "localhost,"], run_dir, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in shipped:
        # Resolved inside the clean install, not the checkout.
        assert "playbook: %s/playbooks/%s.yml" % (path, name) in proc.stdout


def test_backup_verify_runs_by_fqcn_from_outside(installed, moto, tmp_path):
    run_dir, env, _tarball, _path = installed
    s3 = moto.client("s3")
    bucket = "dist-%06d" % random.randrange(10 ** 6)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="config/etc.tar", Body=b"config" * 200)
    extra = {"backup_verify_aws": moto.aws_params, "backup_verify_report_dir": str(tmp_path / "reports"),
             "backup_verify_sets": [{"name": "configuration", "bucket": bucket, "prefix": "config/", "max_age": "1h",
                                     "min_size": 100}]}
    proc = _playbook(["failsafe.recovery.backup_verify", "-i", "localhost,", "-c", "local", "-e", json.dumps(extra)],
                     run_dir, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    assert data["stats"]["localhost"]["failures"] == 0
    report = json.loads((tmp_path / "reports" / "backup_verify.json").read_text())
    assert report["passed"] is True
    assert [s["name"] for s in report["sets"]] == ["configuration"]
    assert (tmp_path / "reports" / "backup_verify.md").is_file()
    stats = data["global_custom_stats"]
    assert stats == {"backup_verify_passed": True, "backup_verify_sets_failed": [],
                     "backup_verify_report": str(tmp_path / "reports" / "backup_verify.md")}


def test_execution_environment_build_context(installed, tmp_path):
    _run_dir, env, tarball, _path = installed
    ee = yaml.safe_load((ROOT / "execution-environment.yml").read_text())
    assert ee["version"] == 3
    deps = ee["dependencies"]
    assert (deps["python"], deps["system"], deps["galaxy"]) == ("requirements.txt", "bindep.txt", "collections/requirements.yml")
    assert ee["additional_build_files"][0]["src"] == ".build/dist/" + TARBALL_NAME
    pins = dict(line.split("==") for line in (ROOT / "requirements-dev.txt").read_text().splitlines() if "==" in line)
    assert deps["ansible_core"]["package_pip"] == "ansible-core==" + pins["ansible-core"]
    assert deps["ansible_runner"]["package_pip"] == "ansible-runner==" + pins["ansible-runner"]

    # The definition's relative paths, laid out as in the checkout, with the freshly built tarball.
    src = tmp_path / "src"
    for rel in ("execution-environment.yml", "bindep.txt", "requirements.txt", "collections/requirements.yml"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, src / rel)
    (src / ".build" / "dist").mkdir(parents=True)
    shutil.copy(tarball, src / ".build" / "dist" / TARBALL_NAME)
    proc = subprocess.run(["ansible-builder", "create", "-f", "execution-environment.yml", "-c", str(tmp_path / "context"),
                           "--output-filename", "Containerfile"], cwd=str(src), env=env, capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ctx = tmp_path / "context"
    files = sorted(str(p.relative_to(ctx)) for p in ctx.rglob("*") if p.is_file())
    for expected in ("Containerfile", "_build/bindep.txt", "_build/requirements.txt", "_build/requirements.yml",
                     "_build/collections/" + TARBALL_NAME, "_build/scripts/assemble", "_build/scripts/introspect.py"):
        assert expected in files, files
    assert (ctx / "_build" / "collections" / TARBALL_NAME).read_bytes() == tarball.read_bytes()
    assert (ctx / "_build" / "requirements.txt").read_text() == (ROOT / "requirements.txt").read_text()
    galaxy_reqs = yaml.safe_load((ctx / "_build" / "requirements.yml").read_text())
    assert {c["name"] for c in galaxy_reqs["collections"]} >= {"amazon.aws", "community.postgresql", "awx.awx"}
    containerfile = (ctx / "Containerfile").read_text()
    assert 'ARG EE_BASE_IMAGE="%s"' % ee["images"]["base_image"]["name"] in containerfile
    assert "/build/collections/" + TARBALL_NAME in containerfile
    assert "introspect.py introspect --user-pip=requirements.txt --user-bindep=bindep.txt" in containerfile


def test_collection_docs_lint_clean(installed):
    """antsibull-docs validates every module, plugin and role argument spec of the installed collection."""
    run_dir, env, dummy, collection = installed
    env = dict(env, PATH="%s:%s" % (ROOT / ".venv" / "bin", env.get("PATH", "")))
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "antsibull-docs"), "lint-collection-docs", "--plugin-docs", "."],
                          env=env, cwd=str(collection), capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
