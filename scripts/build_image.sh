#!/usr/bin/env bash
# Build the one offline image every Molecule scenario uses, from Debian
# packages: debootstrap a minimal root, trim it, and `podman import` it as
#   localhost/failsafe-recovery-base:<hash of this script>
# The package list lives in this file, so the hash changes with it. An image
# with that tag already present is reused. The tag is printed on the last line.
#
# Services in the image are installed but NOT enabled at boot (PostgreSQL,
# HAProxy): a container boots to a bare systemd fast and each scenario starts
# what it uses. Debian's haproxy unit gets a drop-in with an empty
# BindReadOnlyPaths=, which an unprivileged container cannot set up
# (status=226/NAMESPACE otherwise).
#
# Needs root, podman and debootstrap (scripts/setup.sh installs them) and the
# Debian mirror apt on this machine uses.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/extensions/podman/containers.conf}"

SUITE=bookworm
IMAGE_NAME=localhost/failsafe-recovery-base
PACKAGES=(
  python3 python3-apt python3-psycopg
  systemd systemd-sysv dbus
  postgresql-15 pgbackrest
  haproxy
  curl procps sudo
)

log() { echo "build_image: $*" >&2; }

hash="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)"
tag="$IMAGE_NAME:$hash"

if podman image exists "$tag"; then
  log "reusing $tag"
  echo "$tag"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  log "debootstrap needs root; run as root (or run scripts/setup.sh first)"
  exit 1
fi

# The Debian mirror apt uses here: first deb source serving "$SUITE" itself
# (one-line .list format or deb822 .sources), so this works wherever apt works.
find_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    awk -v suite="$SUITE" '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i + 1) == suite) { print $i; exit }
      }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    awk -v suite="$SUITE" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uris != "") {
          split(uris, u, " "); print u[1]; found = 1
        }
        types = ""; suites = ""; uris = ""
      }
      /^[[:space:]]*$/ { flush(); if (found) exit; next }
      /^Types:/  { sub(/^Types:[[:space:]]*/, "");  types = $0 }
      /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
      /^URIs:/   { sub(/^URIs:[[:space:]]*/, "");   uris = $0 }
      END { if (!found) flush() }' "$f"
  done
}
mirror="${DEBIAN_MIRROR:-$(find_mirror | head -n1)}"
if [[ -z $mirror ]]; then
  log "no apt source for '$SUITE' found in /etc/apt; set DEBIAN_MIRROR=http://..."
  exit 1
fi

# apt's proxy, if any, for debootstrap's downloads.
proxy="$(apt-config shell p Acquire::http::Proxy 2>/dev/null | sed -n "s/^p='\(.*\)'$/\1/p")"
if [[ -n $proxy && -z ${http_proxy:-} ]]; then
  export http_proxy="$proxy"
fi

mkdir -p "$ROOT/.cache"
rootfs="$(mktemp -d "$ROOT/.cache/rootfs.XXXXXX")"
cleanup() { rm -rf --one-file-system "$rootfs"; }
trap cleanup EXIT
# A 0700 root made PostgreSQL's postinst skip creating cluster 15/main.
chmod 0755 "$rootfs"

start=$SECONDS
log "debootstrap $SUITE from $mirror"
packages="$(IFS=,; echo "${PACKAGES[*]}")"
if ! debootstrap --variant=minbase --include="$packages" "$SUITE" "$rootfs" "$mirror" \
  >"$ROOT/.cache/debootstrap.log" 2>&1; then
  tail -n 30 "$ROOT/.cache/debootstrap.log" >&2
  [[ -f $rootfs/debootstrap/debootstrap.log ]] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
  log "debootstrap failed (full log: .cache/debootstrap.log)"
  exit 1
fi
log "debootstrap done in $((SECONDS - start))s"

# Container tuning, all offline inside the root.
chroot "$rootfs" systemctl disable --quiet postgresql.service haproxy.service
# Nothing in a test container needs these; they only slow the boot down.
chroot "$rootfs" systemctl mask --quiet \
  apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer \
  systemd-tmpfiles-clean.timer getty.target console-getty.service systemd-logind.service
mkdir -p "$rootfs/etc/systemd/system/haproxy.service.d"
cat >"$rootfs/etc/systemd/system/haproxy.service.d/container.conf" <<'EOF'
# Unprivileged containers cannot set up the read-only bind mounts of
# Debian's unit (status=226/NAMESPACE); drop them.
[Service]
BindReadOnlyPaths=
EOF
# Each container gets its own machine id at boot.
: >"$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id"
# Trim: downloaded packages, apt lists, docs, man pages, translations.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/var/log/*.log "$rootfs"/debootstrap
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +

log "importing $tag"
tar -C "$rootfs" --numeric-owner -c . |
  podman import --quiet \
    --change 'CMD ["/sbin/init"]' \
    --change 'ENV container=podman' \
    --change 'STOPSIGNAL SIGRTMIN+3' \
    --message "failsafe.recovery Molecule base ($SUITE: ${PACKAGES[*]})" \
    - "$tag" >/dev/null
log "built $tag in $((SECONDS - start))s"
# Older builds of the base image only take space now.
podman images --format '{{.Repository}}:{{.Tag}}' "$IMAGE_NAME" | while read -r old; do
  [[ $old == "$tag" ]] || podman rmi --force "$old" >/dev/null 2>&1 || true
done
echo "$tag"
