#!/usr/bin/env bash
# Fold changelogs/fragments (and the modules, plugins and roles new since the last release) into
# changelogs/changelog.yaml under galaxy.yml's version, then write CHANGELOG.rst. antsibull-changelog
# copies the collection to load its plugins, so it runs on a copy of the files git knows (the checkout
# may hold sockets and services' data under .cache); the results are copied back.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
copy="$work/ansible_collections/failsafe/recovery"
mkdir -p "$copy"
{ git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 cp --parents -t "$copy"
(cd "$copy" && "$ROOT/.venv/bin/antsibull-changelog" lint && "$ROOT/.venv/bin/antsibull-changelog" release --reload-plugins)
rm -rf changelogs/fragments
cp -r "$copy/changelogs/." changelogs/
cp "$copy/CHANGELOG.rst" CHANGELOG.rst
