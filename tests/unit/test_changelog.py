"""The changelog is valid and CHANGELOG.rst is what changelogs/changelog.yaml generates.

`make changelog` folds changelogs/fragments into changelogs/changelog.yaml and writes CHANGELOG.rst.
"""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
ANTSIBULL_CHANGELOG = pathlib.Path(sys.executable).parent / "antsibull-changelog"


def run(*args):
    return subprocess.run([str(ANTSIBULL_CHANGELOG)] + list(args), cwd=str(ROOT), capture_output=True, text=True,
                          timeout=120, check=False)


def test_changelog_lint():
    """Fragments and changelog.yaml pass antsibull-changelog lint (section names, entry types, RST)."""
    result = run("lint")
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_changelog_rst_is_generated(tmp_path):
    """CHANGELOG.rst is up to date with changelogs/changelog.yaml (regenerate it with `make changelog`)."""
    output = tmp_path / "CHANGELOG.rst"
    result = run("generate", "--output", str(output))
    assert result.returncode == 0, result.stdout + result.stderr
    assert output.read_text(encoding="utf-8") == (ROOT / "CHANGELOG.rst").read_text(encoding="utf-8"), (
        "CHANGELOG.rst differs from what changelogs/changelog.yaml generates: run `make changelog`")
