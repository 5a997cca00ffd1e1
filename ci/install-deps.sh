#!/usr/bin/env bash
# Installs from Debian/Ubuntu what the tests use and the machine lacks: redis-server, and
# redis-cli and redis-benchmark (package redis-tools). Does nothing when they are present.
# When it cannot install (no apt-get, not root and no sudo, no network) it says why and exits 0:
# the tests that need Redis then print their own reason for skipping.
set -euo pipefail

say() { echo "ci/install-deps.sh: $*"; }

# command -> Debian package that provides it
declare -A wanted=(
  [redis-server]=redis-server
  [redis-cli]=redis-tools
  [redis-benchmark]=redis-tools
)

missing=()
for cmd in "${!wanted[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1; then
    pkg=${wanted[$cmd]}
    [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  say "redis-server, redis-cli and redis-benchmark are present; nothing to install"
  exit 0
fi

say "missing: ${missing[*]}"

if ! command -v apt-get >/dev/null 2>&1; then
  say "cannot install: apt-get is not available on this machine; tests that need Redis will skip"
  exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    say "cannot install: not root and no password-less sudo; tests that need Redis will skip"
    exit 0
  fi
fi

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-qq -o DPkg::Lock::Timeout=120 -o Dpkg::Use-Pty=0)
log=$(mktemp)

# Installing redis-server must not leave a daemon running: without a policy-rc.d of the
# machine's own, one that refuses service starts is put in place for the install only.
policy=/usr/sbin/policy-rc.d
own_policy=false
cleanup() {
  if $own_policy; then "${sudo[@]}" rm -f "$policy"; fi
  rm -f "$log"
}
trap cleanup EXIT
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  own_policy=true
fi

say "apt-get update"
if ! "${sudo[@]}" timeout 300 apt-get "${apt_opts[@]}" update >"$log" 2>&1; then
  say "cannot install: apt-get update failed (no network or no package mirror?); tests that need Redis will skip"
  sed 's/^/  /' "$log" | tail -n 5
  exit 0
fi

say "apt-get install ${missing[*]}"
if ! "${sudo[@]}" timeout 600 apt-get "${apt_opts[@]}" install -y --no-install-recommends \
  "${missing[@]}" >"$log" 2>&1; then
  say "cannot install: apt-get install failed; tests that need Redis will skip"
  sed 's/^/  /' "$log" | tail -n 5
  exit 0
fi

for cmd in "${!wanted[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1; then
    say "installed ${missing[*]} but $cmd is still missing; tests that need it will skip"
    exit 0
  fi
done
say "installed: $(redis-server --version | head -n 1)"
