#!/usr/bin/env bash
# Prepare a Debian 12 machine and this checkout for every make target:
# Debian packages, the Python venv, the pinned collections, the collection
# path that makes the checkout visible as failsafe.recovery, and the pip
# bootstrap file ansible-test would otherwise download.
# Each step is skipped when its inputs have not changed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DEB_PACKAGES=(
  git make curl python3-venv
  postgresql-15 pgbackrest haproxy prometheus pgbouncer stunnel4 socat
  podman runc debootstrap netavark aardvark-dns iptables uidmap
  shellcheck
)

missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "Missing Debian packages. Install them as root, then run make again:" >&2
    echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp() { cat "$@" | sha256sum | cut -c1-16; }

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
want="$(stamp requirements.txt requirements-dev.txt)"
if [[ ! -x .venv/bin/python || "$(cat .venv/.stamp 2>/dev/null)" != "$want" ]]; then
  echo "setup: creating .venv"
  rm -rf .venv
  "$python" -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$want" >.venv/.stamp
fi

want="$(stamp collections/requirements.yml scripts/fetch_collections.py)"
if [[ "$(cat .collections/.stamp 2>/dev/null)" != "$want" ]]; then
  echo "setup: unpacking pinned collections"
  mkdir -p .collections/ansible_collections
  .venv/bin/python scripts/fetch_collections.py
  echo "$want" >.collections/.stamp
fi
mkdir -p .collections/ansible_collections/failsafe
ln -sfn ../../.. .collections/ansible_collections/failsafe/recovery

# ansible-test bootstraps pip in its venvs with a script from a host these
# machines cannot reach; it uses a cached copy when one exists. Ours installs
# pip 24.2 from the wheel on PyPI.
cache="$HOME/.ansible/test/cache"
if [[ ! -f "$cache/get_pip_24_2.py" || ! -f "$cache/pip-24.2-py3-none-any.whl" ]]; then
  mkdir -p "$cache"
  .venv/bin/pip download --quiet --disable-pip-version-check --no-deps --dest "$cache" pip==24.2
  cat >"$cache/get_pip_24_2.py" <<PY
import os, subprocess, sys
wheel = os.path.join("$cache", "pip-24.2-py3-none-any.whl")
subprocess.check_call([sys.executable, os.path.join(wheel, "pip"), "install", "--quiet",
                       "--no-index", "--disable-pip-version-check", wheel])
PY
fi
