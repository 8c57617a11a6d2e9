#!/usr/bin/env bash
# The demo: issues a throw-away site CA and certificates, starts
# waldur-backend-server with the example backend over mutual TLS, and walks it
# through the resource lifecycle with the conformance client, then stops
# everything it started.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. "$ROOT/deploy/lib/common.sh"

ensure_rust
ensure_apt python3 python3
say "building"
cargo build --workspace --bins --quiet

WORK=$(mktemp -d)
PID=""
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

say "issuing a site CA, a server and a client certificate in $WORK/pki"
make_pki "$WORK/pki"
PORT=$(free_port)
sed -e "s|0.0.0.0:50051|127.0.0.1:$PORT|" \
    -e "s|/etc/waldur/pki/ca.pem|$WORK/pki/ca.pem|" \
    -e "s|/etc/waldur/pki/backend.pem|$WORK/pki/server.pem|" \
    -e "s|/etc/waldur/pki/backend.key|$WORK/pki/server.key|" \
    -e "s|coordinator.example.org|coordinator.local|" \
    deploy/config/backend-server.example.yaml > "$WORK/server.yaml"
say "starting waldur-backend-server on 127.0.0.1:$PORT (example backend, mutual TLS)"
"$BIN_DIR/waldur-backend-server" serve --config "$WORK/server.yaml" &
PID=$!
wait_for_port "$PORT" 30 || die "the backend server did not start"

say "driving every RPC of the contract over mutual TLS"
"$BIN_DIR/waldur-backend-conformance" --endpoint "https://127.0.0.1:$PORT" --server-name localhost \
    --ca "$WORK/pki/ca.pem" --cert "$WORK/pki/client.pem" --key "$WORK/pki/client.key" \
    --instance hpc
say "demo finished; stopping the server"
