#!/usr/bin/env bash
# The demo: starts waldur-sim seeded with an offering, a project, a team and
# a few orders; issues a site CA and certificates; starts
# waldur-backend-server with the example backend and the coordinator over
# mutual TLS; shows the orders reach `done` with the resources' backend ids
# and limits, usage reported to Waldur per component and user, and a
# resource paused in Waldur paused on the backend by membership sync, one
# order's trace across both programs as a waterfall (from a trace receiver
# the demo runs), the status, readiness and metrics of the coordinator's
# admin port; then stops everything it started.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. "$ROOT/deploy/lib/common.sh"

ensure_rust
ensure_apt python3 python3
say "building the binaries (the first build takes several minutes on two cores; later ones seconds)"
cargo build --workspace --bins

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

say "issuing a site CA, a backend server and a coordinator certificate"
make_pki "$WORK/pki"

say "starting waldur-sim with an offering, a project and a team (alice, bob)"
SIM_PORT=$(free_port)
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/token"
chmod 600 "$WORK/token"
"$BIN_DIR/waldur-sim" --listen "127.0.0.1:$SIM_PORT" --token-file "$WORK/token" --seed-demo \
    > "$WORK/scenario.json" 2> "$WORK/sim.log" &
PIDS+=($!)
wait_for_port "$SIM_PORT" 30 || die "waldur-sim did not start"
SIM="http://127.0.0.1:$SIM_PORT"

sim() { # METHOD PATH [JSON]
    python3 - "$@" <<'PY'
import json, sys, urllib.request
method, url = sys.argv[1], sys.argv[2]
data = sys.argv[3].encode() if len(sys.argv) > 3 else None
req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
print(urllib.request.urlopen(req).read().decode())
PY
}
OFFERING=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["offering_uuid"])' "$WORK/scenario.json")
PROJECT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["project_uuid"])' "$WORK/scenario.json")
for spec in "Weather Run:5:100" "Protein Folding:20:500" "Ocean Currents:8:50"; do
    IFS=: read -r name cpu storage <<< "$spec"
    sim POST "$SIM/_sim/orders" "{\"type\":\"Create\",\"state\":\"pending-provider\",\"offering_uuid\":\"$OFFERING\",\"project_uuid\":\"$PROJECT\",\"name\":\"$name\",\"limits\":{\"cpu\":$cpu,\"storage\":$storage}}" > /dev/null
done
say "three Create orders are waiting for the provider"

say "starting a trace receiver (waldur-coordinator traces); both programs export their spans to it"
OTLP_PORT=$(free_port)
"$BIN_DIR/waldur-coordinator" traces --listen "127.0.0.1:$OTLP_PORT" --root order --quiet-ms 3000 \
    > "$WORK/traces.txt" 2> "$WORK/traces.log" &
PIDS+=($!)
wait_for_port "$OTLP_PORT" 30 || die "the trace receiver did not start"
export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT"
export OTEL_BSP_SCHEDULE_DELAY=500   # export every half second, so the demo need not wait

BACKEND_PORT=$(free_port)
{ server_config_head "$BACKEND_PORT" "$WORK/pki"; cat <<YAML; } > "$WORK/backend-server.yaml"
  - name: hpc
    type: example
    settings:
      allocation_prefix: "hpc_"
      demo: true          # the in-memory backend on purpose: no warning
YAML
say "starting waldur-backend-server (example backend) on 127.0.0.1:$BACKEND_PORT, mutual TLS"
"$BIN_DIR/waldur-backend-server" serve --config "$WORK/backend-server.yaml" 2> "$WORK/backend.log" &
PIDS+=($!)
wait_for_port "$BACKEND_PORT" 30 || die "waldur-backend-server did not start"

ADMIN_PORT=$(free_port)
cat > "$WORK/coordinator.yaml" <<YAML
version: 1
admin: {listen: "127.0.0.1:$ADMIN_PORT"}
backends:
  hpc:
    endpoint: https://127.0.0.1:$BACKEND_PORT
    server_name: localhost
    instance: hpc
    tls: {ca: $WORK/pki/ca.pem, cert: $WORK/pki/client.pem, key: $WORK/pki/client.key}
offerings:
  - name: HPC cluster (demo)
    offering_uuid: $OFFERING
    waldur:
      api_url: $SIM/api/
      token_file: $WORK/token
    tasks: {orders: true, report: true, membership: true}
    intervals: {orders_seconds: 2, report_seconds: 2, membership_seconds: 2}
    backends: {orders: hpc, report: hpc, membership: hpc}
YAML
say "checking the coordinator config (waldur, mutual TLS, backend)"
"$BIN_DIR/waldur-coordinator" check --config "$WORK/coordinator.yaml"
say "starting waldur-coordinator"
"$BIN_DIR/waldur-coordinator" run --config "$WORK/coordinator.yaml" 2> "$WORK/coordinator.log" &
PIDS+=($!)

deadline=$((SECONDS + 60))
while :; do
    sim GET "$SIM/_sim/state" > "$WORK/state.json"
    left=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(sum(o["state"]!="done" for o in s["orders"].values()))' "$WORK/state.json")
    [ "$left" -eq 0 ] && break
    [ $SECONDS -lt $deadline ] || { cat "$WORK/coordinator.log"; die "orders did not complete"; }
    sleep 0.5
done
python3 - "$WORK/state.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print()
print(f"{'order':<8} {'state':<6} {'resource':<17} {'resource state':<15} {'backend id':<22} limits")
for o in s["orders"].values():
    r = s["resources"][o["resource_uuid"]]
    print(f"{o['type']:<8} {o['state']:<6} {r['name']:<17} {r['state']:<15} {r['backend_id']:<22} {json.dumps(r['limits'])}")
components = [c for o in s["offerings"].values() for c in o["components"]]
usage = ", ".join(c["type"] for c in components if c.get("billing_type") == "usage")
limit = ", ".join(c["type"] for c in components if c.get("billing_type") == "limit")
print()
print(f"Limits are what each order asked for; usage below is reported for the usage-type components ({usage}),")
print(f"not for limit-type ones ({limit}), which are billed by their limit.")
print()
PY
PAUSE=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print(next(r["uuid"] for r in s["resources"].values() if r["name"]=="Ocean Currents"))' "$WORK/state.json")
say "pausing \"Ocean Currents\" in Waldur; waiting for membership sync and the usage report"
sim POST "$SIM/_sim/resources/$PAUSE/flags" '{"paused": true, "downscaled": false}' > /dev/null
deadline=$((SECONDS + 60))
while :; do
    sim GET "$SIM/_sim/state" > "$WORK/state.json"
    ready=$(python3 - "$WORK/state.json" "$PAUSE" <<'PY'
import datetime, json, sys
s = json.load(open(sys.argv[1]))
paused = s["resources"][sys.argv[2]]["backend_metadata"].get("access") == "ACCESS_LEVEL_PAUSED"
# Complete: every resource has, for this month and the last (the coordinator
# reports two periods), a record with per-user usage for every usage-type
# component. A report caught half-way must not pass.
today = datetime.datetime.now(datetime.timezone.utc).date().replace(day=1)
last = (today - datetime.timedelta(days=1)).replace(day=1)
periods = {today.isoformat(), last.isoformat()}
usage_types = {c["type"] for o in s["offerings"].values() for c in o["components"]
               if c.get("billing_type") == "usage"}
have = {(u["resource_uuid"], u["billing_period"][:10], u["type"])
        for u in s["usages"].values() if u["user_usages"]}
complete = all((r, p, t) in have for r in s["resources"] for p in periods for t in usage_types)
print(int(paused and complete))
PY
)
    [ "$ready" -eq 1 ] && break
    [ $SECONDS -lt $deadline ] || { cat "$WORK/coordinator.log"; die "membership sync or usage report did not happen"; }
    sleep 0.5
done
python3 - "$WORK/state.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print()
print(f"{'resource':<17} {'access on the backend':<22} {'period':<11} {'component':<10} {'total':>7}  per user")
for r in s["resources"].values():
    access = r["backend_metadata"].get("access", "?").replace("ACCESS_LEVEL_", "").lower()
    for u in sorted((u for u in s["usages"].values() if u["resource_uuid"] == r["uuid"]),
                    key=lambda u: (u["billing_period"], u["type"])):
        users = ", ".join(f"{k} {v['usage']}" for k, v in sorted(u["user_usages"].items()))
        print(f"{r['name']:<17} {access:<22} {u['billing_period']:<11} {u['type']:<10} {u['usage']:>7}  {users}")
print()
PY
say "one order's trace, as the receiver printed it: Waldur requests, backend calls, the backend server's RPCs"
deadline=$((SECONDS + 60))
until python3 - "$WORK/traces.txt" <<'PY'
import sys
blocks = open(sys.argv[1]).read().split("\n\n")
full = [b for b in blocks if "rpc [waldur-backend-server]" in b and "waldur_request" in b]
if not full:
    sys.exit(1)
print(full[0].rstrip())
PY
do
    [ $SECONDS -lt $deadline ] || { cat "$WORK/traces.log"; die "no complete order trace arrived"; }
    sleep 0.5
done
echo
say "the coordinator's status (waldur-coordinator status; the same page is at http://127.0.0.1:$ADMIN_PORT/)"
"$BIN_DIR/waldur-coordinator" status --url "http://127.0.0.1:$ADMIN_PORT"
echo
say "the coordinator's admin port: readiness and a few metrics (http://127.0.0.1:$ADMIN_PORT)"
python3 - "http://127.0.0.1:$ADMIN_PORT" <<'PY'
import sys, urllib.request, urllib.error
base = sys.argv[1]
try:
    print(urllib.request.urlopen(base + "/readyz").read().decode().rstrip())
except urllib.error.HTTPError as e:
    print(e.read().decode().rstrip())
wanted = ("waldur_coordinator_orders_total", "waldur_coordinator_order_latency_seconds_count",
          "waldur_coordinator_backend_rpcs_total{backend=\"hpc\",method=\"CreateResource\"",
          "waldur_coordinator_usage_report_age_seconds", "waldur_coordinator_membership_changes_total")
for line in urllib.request.urlopen(base + "/metrics").read().decode().splitlines():
    if line.startswith(wanted):
        print(line)
PY
say "the coordinator log (first lines):"
head -n 12 "$WORK/coordinator.log" | sed 's/\x1b\[[0-9;]*m//g'
say "demo finished; stopping waldur-sim, the backend server and the coordinator"
