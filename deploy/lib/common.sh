# Shared helpers for the scripts in deploy/. Sourced, not run.
# Every install step is idempotent: it checks first and only installs what is missing.

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN_DIR=$CARGO_TARGET_DIR/debug

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

APT_UPDATED=""
# ensure_apt PACKAGE COMMAND: installs PACKAGE from Debian unless COMMAND exists.
ensure_apt() {
    local pkg=$1 cmd=$2
    command -v "$cmd" >/dev/null 2>&1 && return 0
    command -v apt-get >/dev/null 2>&1 || die "$cmd is missing and this is not a Debian system: install $pkg"
    if [ -z "$APT_UPDATED" ]; then
        say "apt-get update"
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
    say "installing $pkg"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
}

# ensure_apt_force PACKAGE: installs PACKAGE whatever is on PATH.
ensure_apt_force() {
    dpkg -s "$1" >/dev/null 2>&1 && return 0
    ensure_apt "$1" "/nonexistent/$1"
}

ensure_rust() {
    command -v cargo >/dev/null 2>&1 && return 0
    if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; return 0; fi
    die "cargo not found: this project needs the Rust toolchain named in rust-toolchain.toml (rustup)"
}

# A Python virtual environment with the Python example backend's packages.
PY_VENV=$CARGO_TARGET_DIR/py-venv
ensure_python_venv() {
    local req=$ROOT/backends/python-example/requirements.txt stamp=$PY_VENV/.requirements
    if [ -f "$stamp" ] && cmp -s "$req" "$stamp"; then return 0; fi
    ensure_apt python3 python3
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        ensure_apt_force python3-venv
    fi
    say "creating python venv in $PY_VENV"
    rm -rf "$PY_VENV"
    python3 -m venv "$PY_VENV"
    "$PY_VENV/bin/pip" install -q --upgrade pip >/dev/null
    "$PY_VENV/bin/pip" install -q -r "$req"
    cp "$req" "$stamp"
}

# buf from the npm registry; optional (returns 1 when it cannot be had).
ensure_buf() {
    command -v buf >/dev/null 2>&1 && return 0
    command -v npm >/dev/null 2>&1 || return 1
    say "installing buf from the npm registry"
    npm install -g --silent @bufbuild/buf >/dev/null 2>&1 || return 1
    command -v buf >/dev/null 2>&1
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_for_port PORT SECONDS
wait_for_port() {
    local port=$1 deadline=$((SECONDS + $2))
    while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}

# make_pki DIR: a throw-away site CA, a server certificate for localhost and
# 127.0.0.1, and a client certificate for coordinator.local.
make_pki() {
    local dir=$1 bin=$BIN_DIR/waldur-backend-server
    mkdir -p "$dir"
    [ -f "$dir/ca.pem" ] || "$bin" pki init-ca --dir "$dir" --name "demo site CA" >/dev/null
    [ -f "$dir/server.pem" ] || "$bin" pki issue-server --dir "$dir" --name localhost --san 127.0.0.1 --out server >/dev/null
    [ -f "$dir/client.pem" ] || "$bin" pki issue-client --dir "$dir" --name coordinator.local --out client >/dev/null
}

# server_config_head PORT PKI_DIR: the start of a waldur-backend-server config
# on 127.0.0.1:PORT with the make_pki certificates; callers append instances.
server_config_head() {
    cat <<YAML
version: 1
listen: 127.0.0.1:$1
tls:
  ca: $2/ca.pem
  cert: $2/server.pem
  key: $2/server.key
  allowed_clients: [coordinator.local]
instances:
YAML
}
