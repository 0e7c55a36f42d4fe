#!/usr/bin/env bash
# Run the Molecule scenarios under extensions/molecule/ (all of them, or the
# ones named as arguments) on the offline base image.
#   scripts/molecule.sh [scenario ...]
# Molecule runs from the collection root, where galaxy.yml makes it use
# extensions/molecule/ and its shared config.yml. The image comes from
# scripts/build_image.sh and reaches the scenarios as FAILSAFE_IMAGE.
# Prints one line per scenario, "molecule <scenario>: PASS|FAIL <seconds>s";
# the full output of each goes to .cache/molecule/<scenario>.log (its tail is
# printed when it fails). Exits non-zero if a scenario failed or none ran.
# Containers of ours (label failsafe.recovery.scenario) never outlive it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/extensions/podman/containers.conf}"
export ANSIBLE_COLLECTIONS_PATH="${ANSIBLE_COLLECTIONS_PATH:-$ROOT/.collections}"
[[ -t 1 ]] || export NO_COLOR=1 ANSIBLE_NOCOLOR=1

LABEL=failsafe.recovery.scenario
LOGDIR="$ROOT/.cache/molecule"

# Remove every container of ours, or those of one scenario, by name.
remove_ours() {
  local filter="label=$LABEL${1:+=$1}" names
  mapfile -t names < <(podman ps --all --filter "$filter" --format '{{.Names}}')
  if ((${#names[@]})); then
    echo "molecule: removing leftover containers: ${names[*]}" >&2
    podman rm --force --time 0 "${names[@]}" >/dev/null
  fi
}
trap 'remove_ours' EXIT
trap 'exit 130' INT TERM

if (($#)); then
  scenarios=("$@")
else
  mapfile -t scenarios < <(find extensions/molecule -mindepth 2 -name molecule.yml -printf '%h\n' |
    sed 's|^extensions/molecule/||' | sort)
fi
if ((${#scenarios[@]} == 0)); then
  echo "molecule: no scenario found under extensions/molecule/" >&2
  exit 1
fi

start=$SECONDS
if ! FAILSAFE_IMAGE="$(scripts/build_image.sh | tail -n1)" || [[ -z $FAILSAFE_IMAGE ]]; then
  echo "molecule: building the base image failed" >&2
  exit 1
fi
export FAILSAFE_IMAGE
echo "molecule: image $FAILSAFE_IMAGE ready in $((SECONDS - start))s"

mkdir -p "$LOGDIR"
failed=0
for scenario in "${scenarios[@]}"; do
  log="$LOGDIR/${scenario//\//_}.log"
  start=$SECONDS
  if molecule test --scenario-name "$scenario" >"$log" 2>&1; then
    result=PASS
  else
    result=FAIL
    failed=$((failed + 1))
    echo "---- last lines of $log ----" >&2
    tail -n 60 "$log" >&2
  fi
  remove_ours "$scenario"
  echo "molecule $scenario: $result $((SECONDS - start))s"
done

remove_ours
((failed == 0))
