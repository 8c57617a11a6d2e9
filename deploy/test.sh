#!/usr/bin/env bash
# The test command: installs what is missing (idempotently), then runs the
# format check, clippy, every cargo test (the proto drift test included), the
# end-to-end suite a second time with the backend servers dialing out to the
# coordinator's tunnel (and the Helmholtz tests over plain AMQP; the first
# run speaks AMQPS), buf lint/breaking, the conformance suite over mutual TLS
# against every backend, and the deployment checks.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. "$ROOT/deploy/lib/common.sh"

ensure_rust
ensure_apt protobuf-compiler protoc
ensure_apt_force libprotobuf-dev   # google/protobuf/*.proto for the drift test
ensure_apt python3 python3
ensure_apt chromium chromium   # the status page's browser test
export WALDUR_BROWSER_TESTS=1
ensure_python_venv

say "bringing up SLURM (with accounting), RabbitMQ and OpenLDAP"
as_root "$ROOT/deploy/services.sh" up
export WALDUR_SLURM_CLUSTER=1
export WALDUR_LDAP_URL=ldap://127.0.0.1:389

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "cargo build"
cargo build --workspace --bins --quiet
say "RabbitMQ's AMQPS listener, its certificate from the project's PKI command"
as_root "$ROOT/deploy/services.sh" amqps "${CARGO_TARGET_DIR:-$ROOT/target}/debug/waldur-coordinator"
export WALDUR_AMQPS_CA=/etc/rabbitmq/waldur-tls/ca.pem
say "cargo test"
cargo test --workspace --quiet 2>&1 | grep -v '^$' | grep -vE '^(running 0 tests|test result: ok. 0 passed)'
test "${PIPESTATUS[0]}" -eq 0

say "the end-to-end suite again, every backend server dialing out to the coordinator's tunnel"
WALDUR_TEST_TUNNEL=1 env -u WALDUR_AMQPS_CA cargo test -p waldur-coordinator --quiet \
    --test orders --test membership --test report --test events --test events_broker \
    --test hca --test hca_broker --test usernames --test safety --test trace \
    --test slurm --test moab --test mup 2>&1 | grep -v '^$' | grep -vE '^(running 0 tests|test result: ok. 0 passed)'
test "${PIPESTATUS[0]}" -eq 0

if ensure_buf; then
    say "buf lint and buf breaking (against proto/baseline/v1.0.binpb)"
    (cd proto && buf lint && buf breaking --against baseline/v1.0.binpb)
else
    say "buf is not available (no npm or no registry access): buf lint/breaking skipped"
fi

"$ROOT/deploy/conformance.sh"

say "deployment files (systemd units, containers, helm chart, dashboard)"
"$ROOT/deploy/check-deploy.sh"
say "all tests passed"
