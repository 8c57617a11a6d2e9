#!/usr/bin/env bash
# Static checks of the deployment artifacts in deploy/: systemd units, env file
# templates, Containerfiles, the Helm chart, the Grafana dashboard and the links of
# the operator documents. Needs neither Docker nor Kubernetes: what can only be
# proven by building or installing is checked for structure and consistency here.
#
#   ./deploy/check-deploy.sh        exit 0 when every check passed
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/deploy/lib/common.sh"
DEPLOY=$ROOT/deploy
UNITS=$DEPLOY/systemd
CHART=$DEPLOY/helm/waldur-coordinator

# The metrics the binaries export, name and labels. The Rust side has a test that
# keeps its exported names in sync with this list; change both together.
# Histograms are listed by base name and also match _bucket, _sum and _count.
METRICS='
counter   waldur_coordinator_orders_total                 offering type outcome
histogram waldur_coordinator_order_latency_seconds        offering type
counter   waldur_coordinator_waldur_requests_total        endpoint method status
counter   waldur_coordinator_backend_rpcs_total           backend method code
histogram waldur_coordinator_backend_rpc_duration_seconds backend method
gauge     waldur_coordinator_usage_report_age_seconds     offering
counter   waldur_coordinator_membership_changes_total     offering kind
counter   waldur_coordinator_events_received_total        offering object_type
counter   waldur_coordinator_events_failed_total          offering object_type
counter   waldur_coordinator_hca_requests_total           service message_type outcome
counter   waldur_coordinator_breaker_trips_total          offering kind
gauge     waldur_coordinator_breaker_tripped              offering
gauge     waldur_coordinator_build_info                   version
counter   waldur_backend_rpcs_total                       method code
histogram waldur_backend_rpc_duration_seconds             method
counter   waldur_backend_commands_total                   binary outcome
histogram waldur_backend_command_duration_seconds         binary
counter   waldur_backend_tls_handshakes_refused_total     reason
gauge     waldur_coordinator_tunnel_connected             backend
counter   waldur_coordinator_tunnel_connections_total     backend
gauge     waldur_backend_tunnel_connected
counter   waldur_backend_tunnel_connections_total
'
export METRICS

PASSED=0
FAILED=0
SKIPPED=0
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# check NAME FUNCTION [ARGS...]: runs one check, prints its output indented on
# failure and counts it. A function that prints "skip: REASON" as its last line
# and returns 0 counts as skipped.
check() {
    local name=$1 rc=0 out
    shift
    out=$("$@" 2>&1) || rc=$?
    if [ "$rc" -ne 0 ]; then
        FAILED=$((FAILED + 1))
        printf 'fail: %s\n' "$name"
        [ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/    /'
    elif [[ "${out##*$'\n'}" == skip:* ]]; then
        SKIPPED=$((SKIPPED + 1))
        printf 'skip: %s (%s)\n' "$name" "${out##*skip: }"
    else
        PASSED=$((PASSED + 1))
        printf 'pass: %s\n' "$name"
        [ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/    /'
    fi
}

# A python3 that can import yaml: Debian's python3-yaml when the first python3 on
# PATH has no PyYAML (a pyenv or venv python does not see Debian's modules, so
# /usr/bin/python3 is tried after installing).
ensure_apt python3 python3
PY=python3
if ! "$PY" -c 'import yaml' >/dev/null 2>&1; then
    ensure_apt_force python3-yaml
    "$PY" -c 'import yaml' >/dev/null 2>&1 || PY=/usr/bin/python3
    "$PY" -c 'import yaml' >/dev/null 2>&1 || die "pyyaml is not importable by $PY even after installing python3-yaml"
fi

# ------------------------------------------------------------------ systemd

# verify_unit FILE INSTANCE: systemd-analyze verify on a copy whose ExecStart
# binaries point at /bin/true, so a machine without the binaries installed can
# verify the rest. systemd-analyze exits 0 on most parse problems ("unknown key,
# ignoring"), so every diagnostic that names a line of our copy is an error;
# other messages (users that do not exist here, dependencies not installed) are
# shown but not fatal.
verify_unit() {
    local src=$1 instance=$2 dir out rc=0
    dir=$(mktemp -d "$WORK/unit.XXXX")
    sed -e 's#/usr/local/bin/waldur-coordinator#/bin/true#g' \
        -e 's#/usr/local/bin/waldur-backend-server#/bin/true#g' \
        "$src" >"$dir/$(basename "$src")"
    out=$(cd "$dir" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify "$dir/$instance" 2>&1) || rc=$?
    if printf '%s\n' "$out" | grep -q "^$dir/[^:]*:[0-9]*:"; then
        printf '%s\n' "$out" | sed "s#$dir/##g"
        return 1
    fi
    if [ "$rc" -ne 0 ]; then
        if printf '%s\n' "$out" | grep -qF "$instance"; then
            printf '%s\n' "$out" | sed "s#$dir/##g"
            return 1
        fi
        # systemd-analyze itself could not run (no manager in this container, ...).
        printf 'note: systemd-analyze could not run (%s); parsed instead\n' "$(printf '%s' "$out" | head -n1)"
        parse_unit "$src"
        return
    fi
    [ -z "$out" ] || printf '%s\n' "$out" | sed -e "s#$dir/##g" -e 's/^/note: /'
}

# parse_unit FILE: the INI syntax systemd accepts, when systemd-analyze is absent.
parse_unit() {
    "$PY" - "$1" <<'PY'
import re, sys
path = sys.argv[1]
sections = {"Unit", "Service", "Install"}
section, errors, cont = None, [], False
for n, line in enumerate(open(path), 1):
    raw = line.rstrip("\n")
    if cont:
        cont = raw.endswith("\\")
        continue
    s = raw.strip()
    if not s or s[0] in "#;":
        continue
    m = re.fullmatch(r"\[(\w+)\]", s)
    if m:
        section = m.group(1)
        if section not in sections:
            errors.append(f"{n}: unknown section [{section}]")
        continue
    if section is None:
        errors.append(f"{n}: setting before any section")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*=.*", s):
        errors.append(f"{n}: not a Key=value line: {s}")
    cont = raw.endswith("\\")
for e in errors:
    print(f"{path}:{e}")
sys.exit(1 if errors else 0)
PY
}

check_unit_syntax() {
    local src=$1 instance=$2
    if command -v systemd-analyze >/dev/null 2>&1; then
        verify_unit "$src" "$instance"
    else
        echo "note: systemd-analyze not found; parsed the INI syntax instead"
        parse_unit "$src"
    fi
}

# The settings the operator guide promises, so a later edit cannot drop them
# unnoticed.
check_unit_policy() {
    "$PY" - "$UNITS" <<'PY'
import sys, os
units = sys.argv[1]

def settings(path):
    out = {}
    for line in open(path):
        s = line.strip()
        if not s or s[0] in "#;[":
            continue
        k, _, v = s.partition("=")
        out.setdefault(k, []).append(v)
    return out

common = {
    "Restart": "on-failure", "RestartPreventExitStatus": "64", "NoNewPrivileges": "yes",
    "ProtectSystem": "strict", "PrivateTmp": "yes", "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "LockPersonality": "yes",
    "RestrictRealtime": "yes", "SystemCallArchitectures": "native",
    "MemoryDenyWriteExecute": "yes", "UMask": "0077", "ReadOnlyPaths": "/etc/waldur",
}
expect = {
    "waldur-coordinator.service": dict(common, **{
        "User": "waldur", "Group": "waldur", "ProtectHome": "yes", "CapabilityBoundingSet": "",
        "EnvironmentFile": "-/etc/waldur/coordinator.env",
        "ExecStart": "/usr/local/bin/waldur-coordinator run --config /etc/waldur/coordinator.yaml --log-format json",
    }),
    "waldur-backend-server@.service": dict(common, **{
        "EnvironmentFile": "-/etc/waldur/backend-server-%i.env",
        "ExecStart": "/usr/local/bin/waldur-backend-server serve --config /etc/waldur/backend-server-%i.yaml --log-format json",
        "ReadWritePaths": "/home",
    }),
}
errors = []
for name, want in expect.items():
    got = settings(os.path.join(units, name))
    for k, v in want.items():
        if v not in got.get(k, []):
            errors.append(f"{name}: expected {k}={v}, found {got.get(k)}")
    # The backend keeps root but not every capability of root.
    if name.startswith("waldur-backend-server"):
        if "User" in got:
            errors.append(f"{name}: runs as root by default (sacctmgr writes); User= belongs in a drop-in")
        caps = set(" ".join(got.get("CapabilityBoundingSet", [])).split())
        if not caps or caps - {"CAP_CHOWN", "CAP_FOWNER", "CAP_DAC_OVERRIDE"}:
            errors.append(f"{name}: capability bounding set {sorted(caps)} is not the documented one")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PY
}

check_env_examples() {
    "$PY" - "$UNITS" <<'PY'
import re, sys, os
units = sys.argv[1]
want = {
    "coordinator.env.example": ["WALDUR_TOKEN", "HCA_USERNAME", "HCA_PASSWORD", "OTEL_EXPORTER_OTLP_ENDPOINT",
                                "OTEL_SERVICE_NAME", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "RUST_LOG"],
    "backend-server.env.example": ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_TRACES_SAMPLER",
                                   "OTEL_TRACES_SAMPLER_ARG", "RUST_LOG"],
}
errors = []
for name, names in want.items():
    seen = set()
    for n, line in enumerate(open(os.path.join(units, name)), 1):
        s = line.strip()
        m = re.fullmatch(r"#?([A-Z][A-Z0-9_]*)=(.*)", s)
        if m:
            seen.add(m.group(1))
            if not s.startswith("#"):
                errors.append(f"{name}:{n}: a template sets nothing, comment it out: {s}")
        elif s and not s.startswith("#"):
            errors.append(f"{name}:{n}: not VAR=value or a comment: {s}")
    for v in names:
        if v not in seen:
            errors.append(f"{name}: {v} is not listed")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PY
}

# ------------------------------------------------------------------ containers

# check_containerfile FILE PORTS...: every COPY --from= names an earlier stage,
# every stage that can be a build target (nothing builds on it or copies from it)
# sets USER, the final one included; the cargo packages exist; EXPOSE lists the
# ports.
check_containerfile() {
    "$PY" - "$ROOT" "$@" <<'PY'
import re, sys, os
root, path, ports = sys.argv[1], sys.argv[2], set(sys.argv[3:])
text = open(path).read().replace("\\\n", " ")
stages, errors, exposed = [], [], set()
# Package names of the workspace members (read, never built).
packages = set()
workspace = open(os.path.join(root, "Cargo.toml")).read()
members = re.search(r"^members\s*=\s*\[(.*?)\]", workspace, re.M | re.S)
for member in re.findall(r'"([^"]+)"', members.group(1) if members else ""):
    toml = os.path.join(root, member, "Cargo.toml")
    if not os.path.exists(toml):
        continue
    m = re.search(r'^\[package\][^\[]*?^name\s*=\s*"([^"]+)"', open(toml).read(), re.M | re.S)
    if m:
        packages.add(m.group(1))
for n, line in enumerate(text.splitlines(), 1):
    s = line.strip()
    if not s or s.startswith("#"):
        continue
    word, _, rest = s.partition(" ")
    word = word.upper()
    if word == "FROM":
        m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.I)
        if not m:
            errors.append(f"{n}: cannot parse FROM {rest}")
            continue
        base, name = m.group(1), m.group(2)
        stage = {"name": name, "index": len(stages), "user": None, "used": False}
        for st in stages:
            if st["name"] == base:
                st["used"] = True
        stages.append(stage)
        continue
    if not stages:
        if word != "ARG":
            errors.append(f"{n}: {word} before the first FROM")
        continue
    cur = stages[-1]
    if word == "USER":
        cur["user"] = rest.strip()
    elif word == "EXPOSE":
        exposed.update(p.split("/")[0] for p in rest.split())
    elif word in ("COPY", "ADD"):
        m = re.search(r"--from=(\S+)", rest)
        if m:
            ref = m.group(1)
            earlier = [st for st in stages[:-1] if st["name"] == ref or str(st["index"]) == ref]
            if not earlier:
                errors.append(f"{n}: COPY --from={ref} names no earlier stage")
            for st in earlier:
                st["used"] = True
    elif word == "RUN":
        for pkg in re.findall(r"cargo build[^&;]*?-p\s+(\S+)", rest):
            if pkg not in packages:
                errors.append(f"{n}: cargo package {pkg} does not exist (have: {', '.join(sorted(packages))})")
if not stages:
    errors.append("no FROM")
else:
    for st in stages:
        if (not st["used"] or st is stages[-1]) and not st["user"]:
            errors.append(f"stage {st['name'] or st['index']} can be a build target but sets no USER")
for p in sorted(ports - exposed):
    errors.append(f"port {p} is not in EXPOSE")
for e in errors:
    print(f"{os.path.basename(path)}:{e}")
sys.exit(1 if errors else 0)
PY
}

# ------------------------------------------------------------------ helm

check_chart_values() {
    "$PY" - "$CHART" "$DEPLOY/config/coordinator.example.yaml" <<'PY'
import sys, os, yaml
chart, reference = sys.argv[1], sys.argv[2]
errors = []
meta = yaml.safe_load(open(os.path.join(chart, "Chart.yaml")))
for k, v in {"apiVersion": "v2", "name": "waldur-coordinator"}.items():
    if meta.get(k) != v:
        errors.append(f"Chart.yaml: {k} must be {v}, is {meta.get(k)!r}")
for k in ("version", "appVersion"):
    if not meta.get(k):
        errors.append(f"Chart.yaml: {k} missing")
values = yaml.safe_load(open(os.path.join(chart, "values.yaml")))
config = values.get("config")
if not isinstance(config, dict):
    errors.append("values.yaml: config is not a mapping")
    config = {}
if config.get("version") != 1:
    errors.append("config.version must be 1")
listen = (config.get("admin") or {}).get("listen", "")
if not str(listen).endswith(":9180"):
    errors.append(f"config.admin.listen must listen on 9180, is {listen!r}")

# The coordinator rejects unknown keys: every key of the chart's config must exist in
# the reference config. Maps whose keys the operator names (backends) are compared
# entry by entry with the reference's first entry. admin is new and not yet in the
# reference.
ref = yaml.safe_load(open(reference))
ref["admin"] = {"listen": ""}
named_maps = {("backends",)}
def walk(got, want, path):
    if isinstance(got, dict) and isinstance(want, dict):
        if path in named_maps:
            sample = next(iter(want.values()))
            for k, v in got.items():
                walk(v, sample, path + (k,))
            return
        for k, v in got.items():
            if k not in want:
                errors.append(f"config.{'.'.join(map(str, path + (k,)))}: not a key of the reference config")
            else:
                walk(v, want[k], path + (k,))
    elif isinstance(got, list) and isinstance(want, list) and want:
        for i, v in enumerate(got):
            walk(v, want[0], path + (i,))
walk(config, ref, ())

# Files the config names must be where the chart mounts them.
mounted = {"/etc/waldur/pki/ca.pem", "/etc/waldur/pki/coordinator.pem", "/etc/waldur/pki/coordinator.key"}
for name, b in (config.get("backends") or {}).items():
    for k, p in (b.get("tls") or {}).items():
        if p not in mounted:
            errors.append(f"config.backends.{name}.tls.{k}: {p} is not a file the chart mounts")
for o in config.get("offerings") or []:
    tf = (o.get("waldur") or {}).get("token_file")
    if tf and not tf.startswith("/etc/waldur/secrets/"):
        errors.append(f"offering {o.get('name')}: token_file {tf} is outside /etc/waldur/secrets")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PY
}

# Without helm: the template actions balance, every include names a define, and
# every .Values path a template reads exists in values.yaml.
check_chart_templates() {
    "$PY" - "$CHART" <<'PY'
import re, sys, os, glob, yaml
chart = sys.argv[1]
values = yaml.safe_load(open(os.path.join(chart, "values.yaml")))
errors, defines, includes = [], set(), []
for path in sorted(glob.glob(os.path.join(chart, "templates", "*"))):
    name = os.path.basename(path)
    text = open(path).read()
    if text.count("{{") != text.count("}}"):
        errors.append(f"{name}: unbalanced {{{{ }}}}")
    depth = 0
    for action in re.findall(r"\{\{-?\s*(.*?)\s*-?\}\}", text, re.S):
        if action.startswith("/*"):
            continue
        word = action.split()[0] if action.split() else ""
        if word in ("if", "range", "with", "define", "block"):
            depth += 1
        elif word == "end":
            depth -= 1
            if depth < 0:
                errors.append(f"{name}: end without an opening action")
        if word == "define":
            defines.add(action.split('"')[1])
        includes += [(name, n) for n in re.findall(r'(?:include|template)\s+"([^"]+)"', action)]
        for ref in re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", action):
            node, walked = values, []
            for key in ref.strip(".").split("."):
                walked.append(key)
                if isinstance(node, dict) and key in node:
                    node = node[key]
                elif isinstance(node, dict) and walked[0] == "config":
                    break  # the config block is the operator's; a missing key there is optional
                else:
                    errors.append(f"{name}: .Values.{'.'.join(walked)} is not in values.yaml")
                    break
    if depth != 0:
        errors.append(f"{name}: {depth} block(s) not closed with end")
for name, inc in includes:
    if inc not in defines:
        errors.append(f"{name}: include {inc!r} has no define")
for required in ("deployment.yaml", "configmap.yaml", "secret.yaml", "service.yaml",
                 "servicemonitor.yaml", "_helpers.tpl", "NOTES.txt"):
    if not os.path.exists(os.path.join(chart, "templates", required)):
        errors.append(f"templates/{required} missing")
deployment = open(os.path.join(chart, "templates", "deployment.yaml")).read()
for needle in ("type: Recreate", "replicas: 1", "path: /healthz", "path: /readyz", "name: admin", "mountPath: /etc/waldur/pki"):
    if needle not in deployment:
        errors.append(f"deployment.yaml: {needle!r} missing")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PY
}

check_helm_lint() {
    if ! command -v helm >/dev/null 2>&1; then
        echo "skip: helm is not on PATH; Debian 12 does not package it"
        return 0
    fi
    helm lint --strict "$CHART"
}

# ------------------------------------------------------------------ packages

# check_debs: builds both packages from the debug build, installs them, runs
# --version, the man page, and both binaries' check against each other (the
# backend server from the package serving the example backend over mutual TLS,
# with certificates from the package's own pki command); purges them after.
check_debs() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "skip: installing packages needs root"
        return 0
    fi
    # A host that runs the real packages keeps them: this check installs
    # debug builds and purges them afterwards.
    if dpkg-query -W -f='${Status}' waldur-coordinator waldur-backend-server 2>/dev/null | grep -q 'install ok installed'; then
        echo "skip: the packages are installed on this host; not replacing them"
        return 0
    fi
    local debs=$WORK/debs dir=$WORK/pkg server=""
    "$DEPLOY/package/build-deb.sh" --profile dev --out "$debs" >/dev/null \
        || { echo "build-deb.sh failed"; return 1; }
    trap 'kill $server 2>/dev/null; dpkg --purge waldur-coordinator waldur-backend-server >/dev/null 2>&1; trap - RETURN' RETURN
    dpkg -i "$debs"/waldur-coordinator_*.deb "$debs"/waldur-backend-server_*.deb >/dev/null \
        || { echo "dpkg -i failed"; return 1; }
    /usr/bin/waldur-coordinator --version | grep -q '(commit ' || { echo "coordinator --version names no commit"; return 1; }
    /usr/bin/waldur-backend-server --version | grep -q '(commit ' || { echo "backend server --version names no commit"; return 1; }
    [ -f /lib/systemd/system/waldur-coordinator.service ] && [ -f '/lib/systemd/system/waldur-backend-server@.service' ] \
        || { echo "units not installed"; return 1; }
    grep -q '^ExecStart=/usr/bin/waldur-coordinator ' /lib/systemd/system/waldur-coordinator.service \
        || { echo "the packaged unit does not start /usr/bin/waldur-coordinator"; return 1; }
    [ "$(stat -c '%a %U %G' /etc/waldur)" = "750 root waldur" ] || { echo "/etc/waldur is $(stat -c '%a %U %G' /etc/waldur)"; return 1; }
    zcat /usr/share/man/man1/waldur-coordinator.1.gz | grep -q '^.TH waldur-coordinator 1' || { echo "no man page"; return 1; }
    [ -s /usr/share/bash-completion/completions/waldur-backend-server ] || { echo "no completions"; return 1; }
    mkdir -p "$dir"
    { /usr/bin/waldur-backend-server pki init-ca --dir "$dir" \
        && /usr/bin/waldur-backend-server pki issue-server --dir "$dir" --name localhost --out server \
        && /usr/bin/waldur-coordinator pki issue-client --dir "$dir" --name coordinator.pkg --out client; } >/dev/null \
        || { echo "the packaged pki command failed"; return 1; }
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat > "$dir/server.yaml" <<YAML
version: 1
listen: 127.0.0.1:$port
tls: {ca: $dir/ca.pem, cert: $dir/server.pem, key: $dir/server.key, allowed_clients: [coordinator.pkg]}
instances:
  - {name: demo, type: example, settings: {demo: true}}
YAML
    # A coordinator needs work to do: a Helmholtz service on the local
    # broker is the one that needs no Waldur.
    cat > "$dir/coordinator.yaml" <<YAML
version: 1
backends:
  demo:
    endpoint: https://127.0.0.1:$port
    instance: demo
    server_name: localhost
    tls: {ca: $dir/ca.pem, cert: $dir/client.pem, key: $dir/client.key}
helmholtz:
  services:
    - name: pkg
      service_id: pkg-check
      broker: {host: 127.0.0.1, port: 5672, vhost: /, username_env: PKG_BROKER_USER, password_env: PKG_BROKER_PASSWORD}
      resource_types:
        ComputeResourceSpecV1:
          schema: $DEPLOY/hca/schemas/ComputeResourceSpecV1.json
          backend: demo
          backend_id: "pkg_{request_hash}"
YAML
    /usr/bin/waldur-backend-server check --config "$dir/server.yaml" | grep -q '^PASS instance demo ready' \
        || { echo "waldur-backend-server check failed"; return 1; }
    /usr/bin/waldur-backend-server serve --config "$dir/server.yaml" >"$dir/server.log" 2>&1 &
    server=$!
    local out=""
    for _ in $(seq 1 50); do
        out=$(PKG_BROKER_USER=guest PKG_BROKER_PASSWORD=guest \
            /usr/bin/waldur-coordinator check --config "$dir/coordinator.yaml" 2>&1 || true)
        ! printf '%s\n' "$out" | grep -q '^PASS backend demo: mutual TLS ok' || break
        sleep 0.2
    done
    printf '%s\n' "$out" | grep -q '^PASS backend demo: mutual TLS ok' \
        || { echo "waldur-coordinator check against the packaged server failed:"; echo "$out"; return 1; }
    echo "installed, --version, man page, completions, both checks pass"
}

# ------------------------------------------------------------------ grafana

check_dashboard() {
    "$PY" - "$DEPLOY/grafana/waldur-agent.json" <<'PY'
import json, os, re, sys
path = sys.argv[1]
metrics = {}
for line in os.environ["METRICS"].strip().splitlines():
    kind, name, *labels = line.split()
    metrics[name] = (kind, set(labels))
d = json.load(open(path))
errors = []
if d.get("schemaVersion") != 39:
    errors.append(f"schemaVersion is {d.get('schemaVersion')}, not 39")
variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
ds = variables.get("datasource", {})
if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
    errors.append("templating: no datasource variable of type prometheus")
off = variables.get("offering", {})
q = off.get("query")
q = q.get("query") if isinstance(q, dict) else q
if q != "label_values(waldur_coordinator_orders_total, offering)":
    errors.append(f"templating: offering variable queries {q!r}")

def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))
all_panels = list(panels(d.get("panels", [])))
rows = [p["title"] for p in all_panels if p.get("type") == "row"]
want_rows = ["Orders", "Waldur API", "Backends", "Usage & membership", "Events & Helmholtz", "Backend servers (commands)"]
if rows != want_rows:
    errors.append(f"rows are {rows}, expected {want_rows}")
if not any(p.get("type") == "text" and "trace_id" in p.get("options", {}).get("content", "") for p in all_panels):
    errors.append("no text panel explaining how to find an order's trace (trace_id)")
ids = [p.get("id") for p in all_panels]
if len(ids) != len(set(ids)):
    errors.append("panel ids are not unique")

used = set()
allowed_by = {"le", "instance", "exported_instance", "job"}
for p in all_panels:
    if p.get("type") in ("row", "text"):
        continue
    if p.get("datasource", {}).get("uid") != "${datasource}":
        errors.append(f"panel {p.get('title')!r}: datasource is not ${{datasource}}")
    for t in p.get("targets", []):
        expr = t.get("expr", "")
        labels_here = set()
        for name in re.findall(r"\b(waldur_[a-z0-9_]+)\b", expr):
            base = name
            for suffix in ("_bucket", "_sum", "_count"):
                if name.endswith(suffix) and name[: -len(suffix)] in metrics:
                    base = name[: -len(suffix)]
            if base not in metrics:
                errors.append(f"panel {p.get('title')!r}: {name} is not an exported metric")
                continue
            kind, labels = metrics[base]
            if base != name and kind != "histogram":
                errors.append(f"panel {p.get('title')!r}: {name}: {base} is a {kind}, not a histogram")
            if kind == "histogram" and base == name:
                errors.append(f"panel {p.get('title')!r}: histogram {name} used without _bucket/_sum/_count")
            used.add(base)
            labels_here |= labels
            sel = re.search(re.escape(name) + r"\{([^}]*)\}", expr)
            if sel:
                for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", sel.group(1)):
                    if label not in labels and not (label == "le" and name.endswith("_bucket")):
                        errors.append(f"panel {p.get('title')!r}: {base} has no label {label}")
        for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
            for label in (l.strip() for l in group.split(",")):
                if label and label not in labels_here | allowed_by:
                    errors.append(f"panel {p.get('title')!r}: by ({label}) is no label of the metrics used")
for name in sorted(set(metrics) - used):
    errors.append(f"{name} has no panel")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PY
}

# ------------------------------------------------------------------ documents

# Relative links in the operator documents point at files that exist.
check_doc_links() {
    "$PY" - "$DEPLOY" "$DEPLOY/OPERATOR.md" "$DEPLOY/container/README.md" <<'PY'
import os, re, sys
errors = []
for doc in sys.argv[2:]:
    base = os.path.dirname(doc)
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", open(doc).read()):
        if re.match(r"[a-z]+:", target):
            continue
        if not os.path.exists(os.path.join(base, target)):
            errors.append(f"{os.path.relpath(doc, sys.argv[1])}: link {target} points nowhere")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PY
}

check "unit file syntax: waldur-coordinator.service" \
    check_unit_syntax "$UNITS/waldur-coordinator.service" waldur-coordinator.service
check "unit file syntax: waldur-backend-server@slurm.service" \
    check_unit_syntax "$UNITS/waldur-backend-server@.service" waldur-backend-server@slurm.service
check "unit settings (restart policy, hardening, commands)" check_unit_policy
check "env file templates" check_env_examples
check "Containerfile.coordinator" check_containerfile "$DEPLOY/container/Containerfile.coordinator" 9180
check "Containerfile.backend-server" check_containerfile "$DEPLOY/container/Containerfile.backend-server" 50051 9181
check "helm Chart.yaml, values.yaml and its coordinator config" check_chart_values
check "helm templates (structure, includes, values paths)" check_chart_templates
check "helm lint" check_helm_lint
check "grafana dashboard (variables, rows, metric names and labels)" check_dashboard
check "links in OPERATOR.md and container/README.md" check_doc_links
check "debian packages (build, install, --version, man page, check)" check_debs

if [ "$SKIPPED" -gt 0 ]; then
    printf 'check-deploy: %d passed, %d failed, %d skipped\n' "$PASSED" "$FAILED" "$SKIPPED"
else
    printf 'check-deploy: %d passed, %d failed\n' "$PASSED" "$FAILED"
fi
[ "$FAILED" -eq 0 ]
