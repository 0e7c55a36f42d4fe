"""The collection builds into a tarball that installs into an empty collections path
and is usable from there, outside the checkout."""

import subprocess

from sandbox.runner import ROOT, ansible_env


def test_build_and_install_into_empty_path(tmp_path):
    env = ansible_env({"ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "collections")})
    env.pop("ANSIBLE_CONFIG")
    build = subprocess.run(["ansible-galaxy", "collection", "build", "--force", "--output-path", str(tmp_path), str(ROOT)],
                           env=env, capture_output=True, text=True, check=False, cwd=str(tmp_path))
    assert build.returncode == 0, build.stderr
    tarballs = list(tmp_path.glob("failsafe-recovery-*.tar.gz"))
    assert len(tarballs) == 1
    listing = subprocess.run(["tar", "-tzf", str(tarballs[0])], capture_output=True, text=True, check=True).stdout.split()
    assert "galaxy.yml" not in listing and "MANIFEST.json" in listing
    assert not [n for n in listing if n.startswith((".venv", ".collections", ".cache", "tests/output"))]

    install = subprocess.run(["ansible-galaxy", "collection", "install", "--no-deps", "-p", str(tmp_path / "collections"),
                              str(tarballs[0])], env=env, capture_output=True, text=True, check=False, cwd=str(tmp_path))
    assert install.returncode == 0, install.stderr
    installed = tmp_path / "collections" / "ansible_collections" / "failsafe" / "recovery"
    assert (installed / "MANIFEST.json").is_file()
    assert (installed / "plugins" / "module_utils" / "_base.py").is_file()

    docs = subprocess.run(["ansible-doc", "-t", "module", "-l", "failsafe.recovery"], env=env, capture_output=True, text=True,
                          check=False, cwd=str(tmp_path))
    assert docs.returncode == 0, docs.stderr
    modules = sorted(line.split()[0] for line in docs.stdout.splitlines() if line.strip())
    shipped = sorted("failsafe.recovery." + p.stem for p in (ROOT / "plugins" / "modules").glob("*.py") if p.stem != "__init__")
    assert modules == shipped
