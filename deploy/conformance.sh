#!/usr/bin/env bash
# Runs the conformance suite over mutual TLS against the real servers:
# waldur-backend-server hosting the example backend, the Python example
# backend, the MOAB backend on mam-sim, the MUP backend on mup-sim and (when
# the cluster is up) the SLURM backend. Expects the binaries built and the
# Python venv ready (test.sh does both). Stops every process it started,
# whatever happens.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/deploy/lib/common.sh"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

make_pki "$WORK/pki"
cat > "$WORK/fixtures.yaml" <<YAML
users: [alice, bob]
link_required_email: carol@link.required
validation_required_email: dave@validation.required
unmanaged_backend_id: conf-by-hand
slow_timeout_seconds: 20
YAML

run_suite() { # NAME PORT [FIXTURES]
    say "conformance suite against $1 (https://127.0.0.1:$2, mutual TLS)"
    "$BIN_DIR/waldur-backend-conformance" --endpoint "https://127.0.0.1:$2" --server-name localhost \
        --ca "$WORK/pki/ca.pem" --cert "$WORK/pki/client.pem" --key "$WORK/pki/client.key" \
        --instance hpc --fixtures "${3:-$WORK/fixtures.yaml}" | tee "$WORK/$1.out" | grep -v '^PASS' || true
    local last
    last=$(tail -n 1 "$WORK/$1.out")
    case "$last" in
        *" 0 failed"*) ;;
        *) die "$1 failed the conformance suite" ;;
    esac
    if grep -q '^capabilities not exercised' "$WORK/$1.out"; then
        die "$1: some advertised capabilities were not exercised"
    fi
}

# 1. waldur-backend-server with the example backend (slow provisioning on).
PORT=$(free_port)
{ server_config_head "$PORT" "$WORK/pki"; cat <<YAML; } > "$WORK/server.yaml"
  - name: hpc
    type: example
    settings:
      provisioning_delay_ms: 100
      unmanaged: [conf-by-hand]
YAML
"$BIN_DIR/waldur-backend-server" serve --config "$WORK/server.yaml" 2>"$WORK/server.log" &
PIDS+=($!)
wait_for_port "$PORT" 30 || { cat "$WORK/server.log"; die "waldur-backend-server did not start"; }
run_suite waldur-backend-server "$PORT"

# The Python stub command of proto/README.md, as written (from "mkdir -p gen" to the
# protoc line's end), in a scratch checkout layout: it must make importable stubs.
say "proto/README.md: the Python stub command works as written"
mkdir -p "$WORK/readme" && ln -s "$ROOT/proto" "$WORK/readme/proto"
sed -n '/^mkdir -p gen$/,/backend\.proto$/p' "$ROOT/proto/README.md" > "$WORK/readme/stubs.sh"
grep -q grpc_tools.protoc "$WORK/readme/stubs.sh" || die "proto/README.md: the stub command was not found"
(cd "$WORK/readme" && PATH="$PY_VENV/bin:$PATH" bash -e stubs.sh \
    && PATH="$PY_VENV/bin:$PATH" python -c 'import sys; sys.path.insert(0, "gen"); from waldur.backend.v1 import backend_pb2_grpc') \
    || die "proto/README.md: the Python stub command fails as written"

# 2. The Python example backend.
PORT=$(free_port)
"$PY_VENV/bin/python" "$ROOT/backends/python-example/server.py" --listen "127.0.0.1:$PORT" \
    --ca "$WORK/pki/ca.pem" --cert "$WORK/pki/server.pem" --key "$WORK/pki/server.key" \
    --allow coordinator.local --instance hpc --provisioning-delay-ms 100 \
    --unmanaged conf-by-hand 2>"$WORK/python.log" &
PIDS+=($!)
wait_for_port "$PORT" 60 || { cat "$WORK/python.log"; die "python example backend did not start"; }
run_suite python-example "$PORT"
# 3. waldur-backend-server with the MOAB backend on mam-sim, the stand-in for
#    the MOAB Accounting Manager's mam-* commands.
"$BIN_DIR/mam-sim" install "$WORK/mam"
for user in alice bob; do "$WORK/mam/mam-create-user" -u "$user" --quiet; done
"$WORK/mam/mam-create-account" -a conf-by-hand -d "made by hand" -o nobody --quiet
PORT=$(free_port)
{ server_config_head "$PORT" "$WORK/pki"; cat <<YAML; } > "$WORK/moab.yaml"
  - name: hpc
    type: moab
    settings:
      project_prefix: "mp_"
      allocation_prefix: "ma_"
      mam_bin_dir: $WORK/mam
      components:
        deposit: {label: Deposit, measured_unit: EUR, accounting_type: limit}
YAML
"$BIN_DIR/waldur-backend-server" serve --config "$WORK/moab.yaml" 2>"$WORK/moab.log" &
PIDS+=($!)
wait_for_port "$PORT" 30 || { cat "$WORK/moab.log"; die "the MOAB backend server did not start"; }
run_suite moab "$PORT"

# 4. waldur-backend-server with the MUP backend on mup-sim, the stand-in for a
#    MUP portal's REST API: the fixtures' project exists (so no principal
#    investigator is needed), alice and bob are portal users, and an
#    allocation made by hand sits in the project.
printf 'mup-conformance-pw\n' > "$WORK/mup-password"
chmod 600 "$WORK/mup-password"   # a secret file must be private to the service
cat > "$WORK/mup-seed.yaml" <<YAML
users:
  - {username: alice, email: alice@uni.example}
  - {username: bob, email: bob@uni.example}
projects:
  - {grant_number: CONF-MUP-1, title: conformance, pi: alice@uni.example, start_date: "2026-01-01", end_date: "2026-12-31"}
allocations:
  - {project_grant: CONF-MUP-1, type: x, identifier: conf-by-hand, size: 10}
YAML
SIM_PORT=$(free_port)
"$BIN_DIR/mup-sim" serve --listen "127.0.0.1:$SIM_PORT" --username agent \
    --password-file "$WORK/mup-password" --seed "$WORK/mup-seed.yaml" 2>"$WORK/mup-sim.log" &
PIDS+=($!)
wait_for_port "$SIM_PORT" 30 || { cat "$WORK/mup-sim.log"; die "mup-sim did not start"; }
PORT=$(free_port)
{ server_config_head "$PORT" "$WORK/pki"; cat <<YAML; } > "$WORK/mup.yaml"
  - name: hpc
    type: mup
    settings:
      api_url: http://127.0.0.1:$SIM_PORT
      username: agent
      password_file: $WORK/mup-password
      components:
        cpu: {label: CPU, measured_unit: k-core-hours, accounting_type: limit, unit_factor: 1000}
        gpu: {label: GPU, measured_unit: GPU-hours, accounting_type: limit, mup_allocation_type: GPU}
YAML
cp "$WORK/fixtures.yaml" "$WORK/mup-fixtures.yaml"
cat >> "$WORK/mup-fixtures.yaml" <<YAML
project_name: "CONF / CONF-MUP-1 / conformance"
usage_total_may_exceed_users: true
YAML
"$BIN_DIR/waldur-backend-server" serve --config "$WORK/mup.yaml" 2>"$WORK/mup.log" &
PIDS+=($!)
wait_for_port "$PORT" 30 || { cat "$WORK/mup.log"; die "the MUP backend server did not start"; }
run_suite mup "$PORT" "$WORK/mup-fixtures.yaml"

# 5. waldur-backend-server with the SLURM backend on the real cluster
#    (deploy/services.sh), when it is up.
if [ -n "${WALDUR_SLURM_CLUSTER:-}" ]; then
    PORT=$(free_port)
    { server_config_head "$PORT" "$WORK/pki"; cat <<YAML; } > "$WORK/slurm.yaml"
  - name: hpc
    type: slurm
    settings:
      customer_prefix: "cc_"
      project_prefix: "cp_"
      allocation_prefix: "ca_"
      qos_paused: waldur_paused
      qos_downscaled: waldur_downscaled
      periodic_limits: {enabled: true}
      components:
        cpu: {label: CPU, measured_unit: k-Hours, unit_factor: 60000, accounting_type: limit}
        mem: {label: Memory, measured_unit: gb-Hours, unit_factor: 61440, accounting_type: limit}
YAML
    # The SLURM cases need slugs that make valid account names.
    cat > "$WORK/fixtures.yaml" <<YAML
users: [alice, bob]
customer_slug: ccust
project_slug: cproj
alt_project_slug: cproj2
resource_prefix: cs
unmanaged_backend_id: cp_cproj
YAML
    "$BIN_DIR/waldur-backend-server" serve --config "$WORK/slurm.yaml" 2>"$WORK/slurm.log" &
    PIDS+=($!)
    wait_for_port "$PORT" 30 || { cat "$WORK/slurm.log"; die "the SLURM backend server did not start"; }
    run_suite slurm "$PORT"
fi
say "conformance: every backend passed"
