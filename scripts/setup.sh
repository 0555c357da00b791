#!/usr/bin/env bash
# Installs what vxtap's demo and tests need on a fresh Debian machine (run as root), then builds.
#   Debian: liburing-dev (the native addon's io_uring), iproute2 (ip, bridge), iperf3, tshark, ethtool,
#           iputils-ping, busybox-static, etcd-server, tinc, openvpn and wireguard-go + wireguard-tools (userspace peers for `npm run bench`), docker.io + iptables (the Docker plugin tests
#           run real dockerd daemons)
#   npm:    the locked dependencies; `npm ci` also compiles the native addon (node-gyp: python3, make, g++)
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
PKGS=(liburing-dev iproute2 iperf3 tshark ethtool iputils-ping busybox-static etcd-server tinc openvpn wireguard-go wireguard-tools openssl nftables docker.io iptables netsniff-ng)
missing=()
for p in "${PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
npm ci --no-audit --no-fund
npm run build
