#!/usr/bin/env bash
# One node on sled, one node on PostgreSQL and two nodes on one PostgreSQL, measured in one run
# by the load harness from outside (`--url`, repeated for two nodes): refresh (durable) and /me
# throughput beside /healthz. Starts its own throwaway PostgreSQL cluster (Debian's binaries;
# as root, run as the postgres user) and removes it at the end.
#
#   benches/cluster.sh [harness flags...]      e.g. benches/cluster.sh --duration 5
#
# Builds the release binary and the harness first. The figures are printed per configuration;
# compare them as ratios to that configuration's /healthz, all from the same run.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
BIN=$PWD/target/release/bp-auth
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
WORK=$(mktemp -d /tmp/bp-cluster-bench.XXXXXX)
chmod 755 "$WORK"
AS=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  AS=(runuser -u postgres --)
  chown postgres "$WORK"
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT=$(free_port)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
"${AS[@]}" "$PGBIN/initdb" -D "$WORK/pg" -U postgres --auth=trust >/dev/null
"${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w \
  -o "-p $PGPORT -k $WORK -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
"${AS[@]}" "$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres bench

start_node() { # start_node NAME ENGINE: sets URL (not in a subshell: PIDS must see the node)
  local name=$1 engine=$2 port
  port=$(free_port)
  mkdir -p "$WORK/$name"
  BP_AUTH__STORAGE__ENGINE=$engine \
  BP_AUTH__STORAGE__POSTGRES_URL="postgres://postgres@127.0.0.1:$PGPORT/bench" \
  BP_AUTH__STORAGE__MASTER_KEY_FILE="$WORK/master.key" \
  BP_AUTH__RATE_LIMIT__ENABLED=false BP_AUTH__LOG__LEVEL=warn \
    "$BIN" serve --bind "127.0.0.1:$port" --data-dir "$WORK/$name" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  URL="http://127.0.0.1:$port"
}
stop_nodes() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; PIDS=(); }

run() { # run LABEL URL...
  local label=$1; shift
  local urls=()
  for u in "$@"; do urls+=(--url "$u"); done
  echo "== $label"
  cargo bench --quiet --bench load -- "${urls[@]}" --scenarios healthz,me-jwt,refresh \
    --memory-users 0 --failed-logins 0 "${EXTRA[@]}" 2>&1 | grep -v '^$' || true
}
EXTRA=("$@")

start_node sled sled; run "one node, sled" "$URL"; stop_nodes
start_node pg-a postgres; run "one node, PostgreSQL" "$URL"; stop_nodes
start_node pg-a2 postgres; A=$URL; start_node pg-b postgres; B=$URL
run "two nodes, one PostgreSQL (requests round-robin)" "$A" "$B"; stop_nodes
