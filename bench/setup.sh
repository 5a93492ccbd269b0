#!/usr/bin/env bash
# bench/setup.sh: installs what `npm run bench` drives (HAProxy, nginx, hitch, h2load, openssl, taskset) from
# Debian's packages when they are missing. Debian starts daemons on install; a policy-rc.d that exits 101 stops it
# from starting nginx and haproxy on their default ports. Run as root (or through sudo).
set -euo pipefail

declare -A package_of=(
  [haproxy]=haproxy
  [nginx]=nginx
  [hitch]=hitch
  [h2load]=nghttp2-client
  [openssl]=openssl
  [taskset]=util-linux
)
missing=()
for tool in "${!package_of[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${package_of[$tool]}")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "bench/setup.sh: haproxy, nginx, hitch, h2load, openssl and taskset are installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# bench/setup.sh: do not start services on install\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  created_policy=1
fi
cleanup() { if [ "$created_policy" -eq 1 ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT

echo "bench/setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
# packages may still have started something if a policy-rc.d was already there and allowed it: stop them
for svc in nginx haproxy hitch; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then $SUDO systemctl stop "$svc" || true; fi
done
