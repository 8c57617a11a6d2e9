#!/usr/bin/env bash
# Brings up the real services the tests and the demo use, without systemd, on
# one Debian 12 host:
#   * a single-node SLURM cluster "test" (munge, slurmdbd on MariaDB,
#     slurmctld, slurmd) with AccountingStorageEnforce=associations,limits,qos
#     and PriorityType=priority/multifactor;
#   * RabbitMQ with the rabbitmq_stomp, rabbitmq_web_stomp and
#     rabbitmq_management plugins;
#   * OpenLDAP (slapd) on 127.0.0.1:389 with the test directory
#     dc=waldur,dc=test (admin cn=admin,dc=waldur,dc=test, password
#     "waldur-test": a local test directory, reachable from this host only),
#     people under ou=people, groups under ou=groups, and the voPersonID and
#     eduPersonEntitlement attributes of deploy/ldap/helmholtz.schema.
# MariaDB and RabbitMQ are reused when already running, and installed and
# started only where none runs. Idempotent: packages present or not, daemons
# up or not. `services.sh stop` stops only what this script started.
#
#   sudo deploy/services.sh [up|stop|status]
#   sudo deploy/services.sh amqps WALDUR_COORDINATOR_BINARY
#
# `amqps` gives RabbitMQ a TLS listener on 127.0.0.1:5671 whose certificate
# (for the name localhost only) comes from the project's PKI command, under
# /etc/rabbitmq/waldur-tls (ca.pem is the CA clients trust), and its settings
# in /etc/rabbitmq/conf.d/90-waldur-amqps.conf. It restarts RabbitMQ (also one
# it did not start) when the listener is new or its certificate was renewed.
#
# Runtime files (logs, pid files, state) go under $WALDUR_RUN
# (default /var/tmp/waldur-services).
set -euo pipefail
MODE=${1:-up}
RUN=${WALDUR_RUN:-/var/tmp/waldur-services}
STARTED=$RUN/started.list
CLUSTER=test

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts daemons)"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# pid_alive PIDFILE NAME: the pid file names a live process called NAME.
pid_alive() {
    local pid
    [ -f "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}
# wait_until SECONDS COMMAND...: polls COMMAND every 0.1 s.
wait_until() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}
mark_started() { grep -qx "$1" "$STARTED" 2>/dev/null || echo "$1" >> "$STARTED"; }

install_packages() {
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]}"
    if ! apt-cache policy "${missing[0]}" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        apt-get update -qq
    fi
    # Keep maintainer scripts from starting daemons with their default config.
    local own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d
    return 0
}

dirs() {
    install -d -m 0755 "$RUN" "$RUN/log" "$RUN/run"
    install -d -m 0755 -o munge -g munge "$RUN/log/munge" /run/munge
    install -d -m 0755 -o slurm -g slurm "$RUN/log/slurm" "$RUN/run/slurm" "$RUN/state/slurmctld"
    install -d -m 0755 "$RUN/state/slurmd"
    install -d -m 1777 "$RUN/jobs"
    touch "$STARTED"
    for u in alice bob; do id -u "$u" >/dev/null 2>&1 || useradd -m -s /bin/bash "$u"; done
}

munge_up() {
    [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key; }
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged --log-file="$RUN/log/munge/munged.log" --pid-file=/run/munge/munged.pid
    mark_started munge
    wait_until 10 sh -c 'munge -n | unmunge' || die "munged did not start ($RUN/log/munge/munged.log)"
}

mariadb_up() {
    if ! mariadb-admin ping >/dev/null 2>&1 && ! port_open 3306; then
        install_packages mariadb-server
        install -d -m 0755 -o mysql -g mysql "$RUN/log/mariadb" /run/mysqld
        cat > /etc/mysql/mariadb.conf.d/99-slurm.cnf <<'EOF'
# written by deploy/services.sh: values slurmdbd checks for
[mysqld]
bind-address=127.0.0.1
innodb_buffer_pool_size=1024M
innodb_log_file_size=64M
innodb_lock_wait_timeout=900
max_allowed_packet=64M
EOF
        [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db >/dev/null
        say "starting MariaDB"
        setsid nohup /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid \
            --log-error="$RUN/log/mariadb/mariadb.log" >/dev/null 2>&1 </dev/null &
        mark_started mariadb
        wait_until 30 mariadb-admin ping || die "MariaDB did not start ($RUN/log/mariadb/mariadb.log)"
    fi
    mariadb <<'EOF'
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmdbpass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

slurm_config() {
    local host node
    host=$(hostname -s)
    node=$(slurmd -C 2>/dev/null | head -n 1 | sed -e 's/^NodeName=[^ ]* //' -e 's/ UpTime=.*//')
    [ -n "$node" ] || die "slurmd -C gave no node description"
    install -d -m 0755 /etc/slurm
    cat > /etc/slurm/slurm.conf.new <<EOF
# written by deploy/services.sh -- single-node test cluster, no systemd
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CryptoType=crypto/munge
MailProg=/bin/true
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
StateSaveLocation=$RUN/state/slurmctld
SlurmdSpoolDir=$RUN/state/slurmd
SlurmctldPidFile=$RUN/run/slurm/slurmctld.pid
SlurmdPidFile=$RUN/run/slurm/slurmd.pid
SlurmctldLogFile=$RUN/log/slurm/slurmctld.log
SlurmdLogFile=$RUN/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=10
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5,sched_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
AccountingStorageEnforce=associations,limits,qos
AccountingStorageTRES=cpu,mem,node,billing
JobCompType=jobcomp/none
PriorityType=priority/multifactor
PriorityDecayHalfLife=0
PriorityUsageResetPeriod=NONE
PriorityCalcPeriod=1
PriorityWeightFairshare=1000
MinJobAge=60
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$host NodeAddr=127.0.0.1 $node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    mv /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf
    chmod 0644 /etc/slurm/slurm.conf
    cat > /etc/slurm/slurmdbd.conf <<EOF
# written by deploy/services.sh (must be 0600 and owned by SlurmUser)
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=slurm
DebugLevel=info
LogFile=$RUN/log/slurm/slurmdbd.log
PidFile=$RUN/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=slurm
StoragePass=slurmdbpass
StorageLoc=slurm_acct_db
EOF
    chown slurm:slurm /etc/slurm/slurmdbd.conf
    chmod 0600 /etc/slurm/slurmdbd.conf
}

slurm_up() {
    slurm_config
    if ! pid_alive "$RUN/run/slurm/slurmdbd.pid" slurmdbd; then
        say "starting slurmdbd"
        /usr/sbin/slurmdbd
        mark_started slurmdbd
    fi
    wait_until 60 sacctmgr -n show cluster || die "slurmdbd did not answer ($RUN/log/slurm/slurmdbd.log)"
    if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
        # A new accounting DB with an old controller state aborts slurmctld
        # (CLUSTER ID MISMATCH): start the controller from scratch.
        pid_alive "$RUN/run/slurm/slurmctld.pid" slurmctld && kill "$(cat "$RUN/run/slurm/slurmctld.pid")" && sleep 1
        rm -rf "${RUN:?}/state/slurmctld/"*
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
    if ! pid_alive "$RUN/run/slurm/slurmctld.pid" slurmctld; then
        say "starting slurmctld"
        /usr/sbin/slurmctld
        mark_started slurmctld
    fi
    wait_until 60 sh -c 'scontrol ping | grep -q "is UP"' || die "slurmctld did not start ($RUN/log/slurm/slurmctld.log)"
    local host; host=$(hostname -s)
    if ! pid_alive "$RUN/run/slurm/slurmd.pid" slurmd; then
        say "starting slurmd"
        local before; before=$(date +%s)
        /usr/sbin/slurmd
        mark_started slurmd
        # Ready when the node is idle and slurmd registered after its start.
        wait_until 60 sh -c "sinfo -h -n $host -o %T | grep -qE '^(idle|mixed|allocated)' && \
            [ \$(date -d \"\$(scontrol -o show node $host | sed -n 's/.*SlurmdStartTime=\([^ ]*\).*/\1/p')\" +%s) -ge $before ]" \
            || die "slurmd did not register ($RUN/log/slurm/slurmd.log)"
    fi
    wait_until 60 sh -c "sinfo -h -n $host -o %T | grep -qE '^(idle|mixed|allocated)'" || die "node $host is not idle"
    # QoS the SLURM backend's pause and downscale switch accounts to.
    sacctmgr -n -P show qos format=name | grep -qx waldur_paused \
        || sacctmgr -i add qos waldur_paused MaxSubmitJobsPerUser=0 >/dev/null
    sacctmgr -n -P show qos format=name | grep -qx waldur_downscaled \
        || sacctmgr -i add qos waldur_downscaled MaxTRESPerJob=cpu=1 >/dev/null
}

rabbitmq_up() {
    if ! port_open 5672; then
        install_packages rabbitmq-server
        install -d -m 0755 -o rabbitmq -g rabbitmq "$RUN/log/rabbitmq"
        cat > /etc/rabbitmq/rabbitmq-env.conf <<EOF
# written by deploy/services.sh
NODENAME=rabbit@localhost
NODE_IP_ADDRESS=127.0.0.1
NODE_PORT=5672
LOG_BASE=$RUN/log/rabbitmq
export ERL_EPMD_ADDRESS=127.0.0.1
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
        cat > /etc/rabbitmq/rabbitmq.conf <<'EOF'
# written by deploy/services.sh
listeners.tcp.default = 127.0.0.1:5672
loopback_users.guest = true
stomp.listeners.tcp.1 = 127.0.0.1:61613
web_stomp.tcp.ip = 127.0.0.1
web_stomp.tcp.port = 15674
management.tcp.ip = 127.0.0.1
management.tcp.port = 15672
log.file.level = info
log.console = false
EOF
        rabbitmq-plugins enable --offline rabbitmq_stomp rabbitmq_web_stomp rabbitmq_management >/dev/null
        say "starting RabbitMQ"
        rabbitmq-server -detached
        mark_started rabbitmq
        wait_until 90 rabbitmq-diagnostics -q check_running || die "RabbitMQ did not start ($RUN/log/rabbitmq)"
    fi
    if ! port_open 61613 || ! port_open 15674 || ! port_open 15672; then
        say "enabling RabbitMQ's STOMP, Web-STOMP and management plugins"
        rabbitmq-plugins enable rabbitmq_stomp rabbitmq_web_stomp rabbitmq_management >/dev/null
        wait_until 60 bash -c "(exec 3<>/dev/tcp/127.0.0.1/61613) && (exec 3<>/dev/tcp/127.0.0.1/15674)" \
            || die "STOMP listeners did not open"
    fi
}

LDAP_BASE=dc=waldur,dc=test
LDAP_ADMIN=cn=admin,$LDAP_BASE
LDAP_PASSWORD=waldur-test
SCRIPTS=$(cd "$(dirname "$0")" && pwd)

ldap_admin() { "$1" -x -H ldap://127.0.0.1:389 -D "$LDAP_ADMIN" -w "$LDAP_PASSWORD" "${@:2}"; }

ldap_up() {
    if ! port_open 389; then
        install_packages slapd ldap-utils
        local dir=$RUN/ldap
        install -d -m 0750 -o openldap -g openldap "$dir" "$dir/db"
        install -m 0644 "$SCRIPTS/ldap/helmholtz.schema" "$dir/helmholtz.schema"
        # A config file of our own, not Debian's cn=config (whose suffix the
        # package derives from the host name): the same directory on every
        # machine.
        cat > "$dir/slapd.conf" <<EOF
# written by deploy/services.sh
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
include $dir/helmholtz.schema
pidfile $dir/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 104857600
suffix "$LDAP_BASE"
rootdn "$LDAP_ADMIN"
rootpw $LDAP_PASSWORD
directory $dir/db
index objectClass eq
index uid,memberUid,voPersonID,eduPersonEntitlement eq
EOF
        # It holds the admin password.
        chown openldap:openldap "$dir/slapd.conf"
        chmod 0640 "$dir/slapd.conf"
        say "starting slapd"
        slaptest -Q -u -f "$dir/slapd.conf" || die "slapd's config $dir/slapd.conf does not load"
        slapd -f "$dir/slapd.conf" -h "ldap://127.0.0.1:389/" -u openldap -g openldap \
            || die "slapd did not start (its messages go to syslog; try slapd -d 1 -f $dir/slapd.conf)"
        mark_started slapd
        wait_until 30 port_open 389 || die "slapd did not start"
    fi
    if ! ldap_admin ldapsearch -LLL -b "$LDAP_BASE" -s base dn >/dev/null 2>&1; then
        printf 'dn: %s\nobjectClass: dcObject\nobjectClass: organization\no: waldur test\ndc: waldur\n' "$LDAP_BASE" \
            | ldap_admin ldapadd >/dev/null \
            || die "port 389 answers, but not as the test directory $LDAP_BASE (another slapd?)"
    fi
    local ou
    for ou in people groups; do
        ldap_admin ldapsearch -LLL -b "ou=$ou,$LDAP_BASE" -s base dn >/dev/null 2>&1 && continue
        printf 'dn: ou=%s,%s\nobjectClass: organizationalUnit\nou: %s\n' "$ou" "$LDAP_BASE" "$ou" \
            | ldap_admin ldapadd >/dev/null
    done
}

# amqps_up BINARY: a TLS listener for RabbitMQ, its certificate issued by
# the project's PKI command (BINARY pki ...) and renewed a week before it
# expires. The listener's settings go to a file of their own under
# /etc/rabbitmq/conf.d (RabbitMQ 3.10 reads it beside rabbitmq.conf); the
# broker is restarted when they or the certificate changed.
amqps_up() {
    local bin=$1 dir=/etc/rabbitmq/waldur-tls conf=/etc/rabbitmq/conf.d/90-waldur-amqps.conf
    local restart=""
    [ -x "$bin" ] || die "amqps: $bin is not the waldur-coordinator binary (build it first)"
    port_open 5672 || die "amqps: RabbitMQ is not running (run services.sh up first)"
    if [ ! -s "$dir/broker.pem" ] || [ ! -s "$dir/broker.key" ] || [ ! -s "$dir/ca.pem" ] \
            || ! openssl x509 -checkend 604800 -noout -in "$dir/broker.pem" >/dev/null 2>&1; then
        say "issuing the broker's TLS certificate (for localhost only) from a new test CA"
        rm -rf "$dir"
        install -d -m 0755 -o rabbitmq -g rabbitmq "$dir"
        "$bin" pki init-ca --dir "$dir" --name "waldur test broker CA" >/dev/null
        "$bin" pki issue-server --dir "$dir" --name localhost --out broker >/dev/null
        rm -f "$dir/ca.key"   # nothing else is ever signed with it
        chown rabbitmq:rabbitmq "$dir"/*
        chmod 0644 "$dir/ca.pem"
        restart=1
    fi
    local want
    want=$(cat <<EOF
# AMQPS for the tests, written by deploy/services.sh amqps
listeners.ssl.default = 127.0.0.1:5671
ssl_options.cacertfile = $dir/ca.pem
ssl_options.certfile = $dir/broker.pem
ssl_options.keyfile = $dir/broker.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
EOF
)
    if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
        install -d -m 0755 /etc/rabbitmq/conf.d
        printf '%s\n' "$want" > "$conf"
        restart=1
    fi
    if [ -n "$restart" ] || ! port_open 5671; then
        say "restarting RabbitMQ with its AMQPS listener"
        rabbitmqctl stop >/dev/null 2>&1 || true
        wait_until 60 bash -c '! (exec 3<>/dev/tcp/127.0.0.1/5672)' || die "RabbitMQ did not stop"
        rabbitmq-server -detached
        wait_until 90 rabbitmq-diagnostics -q check_running || die "RabbitMQ did not start"
        wait_until 30 port_open 5671 || die "RabbitMQ's AMQPS listener did not open (see its log)"
        # STOMP, Web-STOMP and the management API come up after the core.
        wait_until 60 bash -c '(exec 3<>/dev/tcp/127.0.0.1/15672) && (exec 3<>/dev/tcp/127.0.0.1/61613) && (exec 3<>/dev/tcp/127.0.0.1/15674)' \
            || die "RabbitMQ's plugins did not come back"
    fi
}

stop_all() {
    [ -f "$STARTED" ] || { say "nothing was started by this script"; return 0; }
    local svc
    for svc in $(tac "$STARTED"); do
        case "$svc" in
            slurmd|slurmctld|slurmdbd)
                if pid_alive "$RUN/run/slurm/$svc.pid" "$svc"; then say "stopping $svc"; kill "$(cat "$RUN/run/slurm/$svc.pid")"; fi ;;
            munge)
                if pid_alive /run/munge/munged.pid munged; then say "stopping munged"; kill "$(cat /run/munge/munged.pid)"; fi ;;
            mariadb)
                if pid_alive /run/mysqld/mysqld.pid mariadbd; then say "stopping MariaDB"; kill "$(cat /run/mysqld/mysqld.pid)"; fi ;;
            rabbitmq)
                say "stopping RabbitMQ"; rabbitmqctl stop >/dev/null 2>&1 || true ;;
            slapd)
                if pid_alive "$RUN/ldap/slapd.pid" slapd; then say "stopping slapd"; kill "$(cat "$RUN/ldap/slapd.pid")"; fi ;;
        esac
    done
    rm -f "$STARTED"
}

case "$MODE" in
    up)
        started=$SECONDS
        install_packages munge slurmctld slurmd slurmdbd slurm-client
        dirs
        munge_up
        mariadb_up
        slurm_up
        rabbitmq_up
        ldap_up
        say "services up in $((SECONDS - started)) s: SLURM cluster $CLUSTER, RabbitMQ with STOMP (61613) and Web-STOMP (15674), OpenLDAP (389, $LDAP_BASE)"
        ;;
    amqps) amqps_up "${2:?usage: $0 amqps WALDUR_COORDINATOR_BINARY}" ;;
    stop) stop_all ;;
    status)
        scontrol ping 2>/dev/null || true
        sinfo 2>/dev/null || true
        port_open 5672 && echo "RabbitMQ AMQP up" || echo "RabbitMQ AMQP down"
        port_open 15674 && echo "Web-STOMP up" || echo "Web-STOMP down"
        port_open 5671 && echo "RabbitMQ AMQPS up" || echo "RabbitMQ AMQPS down"
        port_open 389 && echo "OpenLDAP up" || echo "OpenLDAP down"
        ;;
    *) die "usage: $0 [up|stop|status|amqps BINARY]" ;;
esac
