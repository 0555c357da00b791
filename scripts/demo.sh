#!/usr/bin/env bash
# vxtap demo: two "hosts" (network namespaces joined by a veth underlay, 198.18.0.0/24), one vxtap agent per host,
# both on one embedded KV store (a single SQLite file), two "containers" (namespaces) per host on one overlay
# network (198.19.1.0/24), then a cross-host ping and a short iperf3 throughput figure. Everything it creates
# carries a per-run tag and is removed on exit.
#
#   sudo bash scripts/demo.sh            (after `npm install && npm run build`)
#   KEEP=1 bash scripts/demo.sh          leaves the topology up and prints how to poke at it (Ctrl-C cleans up)
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="vxd$$"
VXTAP="node --no-memory-reducer dist/src/cli/main.js" # the flag matters for the agent: see src/cli/main.ts
RUN="/tmp/$TAG"
PIDS=()

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done; done
  for ns in h1 h2 c1a c1b c2a c2b; do ip netns del "$TAG-$ns" 2>/dev/null; done
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || { echo "demo: needs root (network namespaces, TAP devices)" >&2; exit 1; }
[ -f build/Release/vxtap_native.node ] && [ -f dist/src/cli/main.js ] || { echo "demo: run 'npm install && npm run build' first" >&2; exit 1; }
mkdir -p "$RUN"

say "underlay: two hosts, $TAG-h1 (198.18.0.1) and $TAG-h2 (198.18.0.2), joined by a veth pair"
for ns in h1 h2 c1a c1b c2a c2b; do ip netns add "$TAG-$ns"; ip -n "$TAG-$ns" link set lo up; done
ip link add "$TAG-u1" type veth peer name "$TAG-u2"
ip link set "$TAG-u1" netns "$TAG-h1"
ip link set "$TAG-u2" netns "$TAG-h2"
ip -n "$TAG-h1" addr add 198.18.0.1/24 dev "$TAG-u1"
ip -n "$TAG-h2" addr add 198.18.0.2/24 dev "$TAG-u2"
ip -n "$TAG-h1" link set "$TAG-u1" up
ip -n "$TAG-h2" link set "$TAG-u2" up

say "one vxtap agent per host, sharing the embedded store $RUN/store.db"
for h in 1 2; do
  ip netns exec "$TAG-h$h" $VXTAP agent --vtep "198.18.0.$h" --host "h$h" --socket "$RUN/h$h.sock" \
    --kv "$RUN/store.db" --state-dir "$RUN/state" >"$RUN/h$h.log" 2>&1 &
  PIDS+=($!)
done
for h in 1 2; do
  for _ in $(seq 100); do [ -S "$RUN/h$h.sock" ] && break; sleep 0.1; done
  [ -S "$RUN/h$h.sock" ] || { echo "agent h$h did not start:"; cat "$RUN/h$h.log"; exit 1; }
done
v1() { $VXTAP "$@" --socket "$RUN/h1.sock"; }
v2() { $VXTAP "$@" --socket "$RUN/h2.sock"; }

say "overlay network 'demo' (198.19.1.0/24) created once, on host 1; host 2 sees it through the store"
v1 network create demo --subnet 198.19.1.0/24
sleep 0.2
v2 network ls

say "containers: two per host, each with a TAP as its eth0"
v1 endpoint attach demo --netns "$TAG-c1a" --name web --ip 198.19.1.10
v1 endpoint attach demo --netns "$TAG-c1b" --name db --ip 198.19.1.11
v2 endpoint attach demo --netns "$TAG-c2a" --name client --ip 198.19.1.20
v2 endpoint attach demo --netns "$TAG-c2b" --name worker --ip 198.19.1.21
ip -n "$TAG-c2a" -br addr show dev eth0

say "cross-host ping: client (host 2) -> web (host 1)"
ip netns exec "$TAG-c2a" ping -c 4 -i 0.2 -W 2 198.19.1.10

say "same-host ping: web -> db (host 1, never leaves the agent)"
ip netns exec "$TAG-c1a" ping -c 2 -i 0.2 -W 2 198.19.1.11

say "where host 2 forwards each MAC (vxtap fdb show): remote MACs and the flood list come from the store"
v2 fdb show

if command -v iperf3 >/dev/null; then
  say "throughput: iperf3 TCP, client (host 2) -> web (host 1), 3 s"
  ip netns exec "$TAG-c1a" iperf3 -s -1 -B 198.19.1.10 >/dev/null 2>&1 &
  SRV=$!
  sleep 0.5
  ip netns exec "$TAG-c2a" iperf3 -c 198.19.1.10 -t 3 -J >"$RUN/iperf.json" || true
  wait "$SRV" 2>/dev/null || true
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    if (r.error) { console.log("iperf3 failed: " + r.error); process.exit(0); }
    const s = r.end.sum_received;
    console.log(`TCP over vxtap: ${(s.bits_per_second / 1e9).toFixed(2)} Gbit/s (${(s.bytes / 1e6).toFixed(0)} MB in ${s.seconds.toFixed(1)} s, ${r.end.sum_sent.retransmits} retransmits)`);
  ' "$RUN/iperf.json"
else
  echo "(iperf3 not installed: apt-get install iperf3 for the throughput figure)"
fi

say "agent counters on host 1 (vxtap stats)"
v1 stats

if [ "${KEEP:-}" = 1 ]; then
  say "topology is up. Try: ip netns exec $TAG-c2a ping 198.19.1.11 ; $VXTAP stats --socket $RUN/h1.sock"
  echo "Ctrl-C to tear it down."
  sleep infinity
fi
say "done: cleaning up $TAG-*"
