#!/usr/bin/env bash
# Local dependency services for gatehouse, without Docker: PostgreSQL 15, Redis and a
# single-node Apache Kafka 4.x (KRaft) taken from Maven Central. Everything listens on
# 127.0.0.1 and keeps its data under $DATA_DIR (default: <repo>/.data).
#
#   scripts/services.sh start            start whatever is not running (idempotent), print env lines
#   scripts/services.sh stop             stop what this script started (idempotent)
#   scripts/services.sh status           one line per service
#   scripts/services.sh env              print the env lines without starting anything
#   scripts/services.sh {postgres,redis,kafka}-{start,stop,status}
#   scripts/services.sh start kafka redis    (start/stop/status also take service names)
#
# Progress goes to stderr; stdout carries only the env lines, so
#   eval "$(scripts/services.sh start)"   or   scripts/services.sh start > .data/services.env
# both work. The same lines are written to $DATA_DIR/services.env after every start.
#
# Environment (all optional):
#   DATA_DIR             data root (default <repo>/.data)
#   PGPORT               Postgres port (5432)          PG_BIN   dir with initdb/pg_ctl/postgres
#   REDIS_PORT           Redis port (6379)
#   KAFKA_PORT           Kafka broker port (9092)      KAFKA_CONTROLLER_PORT  (9093)
#   KAFKA_HEAP_OPTS      JVM heap ("-Xms256m -Xmx512m")
#   KAFKA_JVM_OPTS       other JVM flags of the broker (G1, 20 ms pause goal)
#   JAVA_HOME            Java 17+ to run Kafka (else `java` on PATH)
#   MVN_FLAGS            extra flags for the one-off `mvn dependency:copy-dependencies`
#   SERVICES_TIMEOUT     readiness timeout per service in seconds (Postgres/Redis 60, Kafka 120)
#   GATEHOUSE_NO_INSTALL=1  never apt-get install missing packages, even as root
#
# As root, missing packages (redis-server, PostgreSQL, a JRE, Maven) are installed with
# apt-get where available, and Postgres runs as the `postgres` system user (initdb and the
# server refuse to run as root). As a normal user the binaries must already be installed.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
DATA_DIR=$(realpath -m "${DATA_DIR:-$REPO_ROOT/.data}")

HOST=127.0.0.1
PGPORT=${PGPORT:-5432}
REDIS_PORT=${REDIS_PORT:-6379}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
KAFKA_JVM_OPTS=${KAFKA_JVM_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent}

PG_ROLE=gatehouse
PG_PASSWORD=gatehouse
PG_DATABASE=gatehouse
DATABASE_URL="postgres://$PG_ROLE:$PG_PASSWORD@$HOST:$PGPORT/$PG_DATABASE?sslmode=disable"
REDIS_URL="redis://$HOST:$REDIS_PORT/0"
KAFKA_BROKERS="$HOST:$KAFKA_PORT"

ALL_SERVICES=(postgres redis kafka)

# The platform's topics (internal/wire): name:partitions (replication factor 1 on a single node).
KAFKA_TOPICS=(
  gateway.request-logs.v1:6
  platform.events.v1:6
  webhooks.dead-letter.v1:3
)

PG_TIMEOUT=${SERVICES_TIMEOUT:-60}
REDIS_TIMEOUT=${SERVICES_TIMEOUT:-60}
KAFKA_TIMEOUT=${SERVICES_TIMEOUT:-120}
STOP_TIMEOUT=60

KAFKA_HOME=$DATA_DIR/kafka
KAFKA_LIBS=$KAFKA_HOME/libs
KAFKA_POM=$SCRIPT_DIR/kafka/pom.xml
KAFKA_PIDFILE=$KAFKA_HOME/kafka.pid
KAFKA_LOG=$KAFKA_HOME/server.log
KAFKA_OUT=$KAFKA_HOME/kafka.out
REDIS_DIR=$DATA_DIR/redis
REDIS_PIDFILE=$REDIS_DIR/redis.pid
REDIS_LOG=$REDIS_DIR/redis.log

# ---------------------------------------------------------------------------------------
# helpers

say() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'services.sh: warning: %s\n' "$*" >&2; }
die() {
  printf 'services.sh: error: %s\n' "$*" >&2
  exit 1
}

is_root() { [[ $(id -u) -eq 0 ]]; }

now() { date +%s; }

# tail_log FILE... prints the end of each readable log to stderr (used on failures).
tail_log() {
  local f
  for f in "$@"; do
    [[ -s $f ]] || continue
    printf -- '---- last 40 lines of %s ----\n' "$f" >&2
    tail -n 40 "$f" >&2 || true
    printf -- '----\n' >&2
  done
}

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() { timeout 2 bash -c ">/dev/tcp/$HOST/$1" 2>/dev/null; }

# pid_alive PID [WORD]: the process exists and (if WORD is given) its command line contains WORD,
# so that a stale pidfile whose pid was reused by another program is never signalled.
pid_alive() {
  local pid=$1 word=${2:-}
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || [[ -d /proc/$pid ]] || return 1
  [[ -z $word ]] && return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$word"
}

read_pidfile() {
  if [[ -s $1 ]]; then head -n1 "$1" | tr -dc '0-9'; fi
}

# wait_pid_exit PID SECONDS
wait_pid_exit() {
  local pid=$1 deadline=$(($(now) + $2))
  while kill -0 "$pid" 2>/dev/null; do
    (($(now) < deadline)) || return 1
    sleep 0.2
  done
}

APT_UPDATED=0
# apt_install PKG...: only as root, only with apt-get, never when GATEHOUSE_NO_INSTALL=1.
apt_install() {
  is_root || return 1
  command -v apt-get >/dev/null 2>&1 || return 1
  [[ ${GATEHOUSE_NO_INSTALL:-0} != 1 ]] || return 1
  say "installing $* with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ((!APT_UPDATED)); then
    apt-get update -qq >&2 || return 1
    APT_UPDATED=1
  fi
  apt-get install -y -qq --no-install-recommends "$@" >&2
}

# A lock so that two concurrent `start`s (say make run and make test) do not race. The fd is
# closed (9>&-) for every daemon we spawn, otherwise the daemon would hold the lock forever.
take_lock() {
  mkdir -p "$DATA_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$DATA_DIR/.services.lock"
    flock -w 300 9 || die "another services.sh holds $DATA_DIR/.services.lock for more than 300s"
  fi
}

# ---------------------------------------------------------------------------------------
# PostgreSQL

PG_BIN=${PG_BIN:-}
PSQL=""
PG_OS_USER=""
PGDATA_DIR=""
PG_RUN=""
PG_LOG=""

pg_paths() {
  PGDATA_DIR=$DATA_DIR/postgres
  PG_RUN=$DATA_DIR/postgres-run
  PG_LOG=$DATA_DIR/postgres.log
  if [[ -L $PGDATA_DIR ]]; then
    # Relocated cluster (see pg_relocate_if_unreachable): its socket and log sit beside it.
    local base
    base=$(dirname "$(readlink -f "$PGDATA_DIR")")
    PGDATA_DIR=$base/postgres
    PG_RUN=$base/run
    PG_LOG=$base/postgres.log
  fi
  if is_root; then PG_OS_USER=${PG_OS_USER:-postgres}; else PG_OS_USER=$(id -un); fi
}

pg_version_of() { "$1/postgres" --version 2>/dev/null | sed -n 's/^[^0-9]*\([0-9][0-9]*\).*/\1/p'; }

# pg_find_bin sets PG_BIN to a directory holding initdb, pg_ctl and postgres. An existing data
# directory pins the major version; otherwise 15 is preferred, then the newest installed.
pg_find_bin() {
  local want="" d c
  [[ -s $PGDATA_DIR/PG_VERSION ]] && want=$(<"$PGDATA_DIR/PG_VERSION")
  local -a cands=()
  [[ -n $PG_BIN ]] && cands+=("$PG_BIN")
  cands+=("/usr/lib/postgresql/${want:-15}/bin")
  for c in pg_ctl initdb postgres; do
    if command -v "$c" >/dev/null 2>&1; then
      cands+=("$(dirname "$(readlink -f "$(command -v "$c")")")")
    fi
  done
  while IFS= read -r d; do cands+=("$d"); done < <(printf '%s\n' /usr/lib/postgresql/*/bin /usr/pgsql-*/bin | sort -rV)
  for d in "${cands[@]}"; do
    [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]] || continue
    if [[ -n $want && $(pg_version_of "$d") != "$want" ]]; then continue; fi
    PG_BIN=$d
    return 0
  done
  PG_BIN=""
  return 1
}

pg_find_psql() {
  if [[ -n $PG_BIN && -x $PG_BIN/psql ]]; then
    PSQL=$PG_BIN/psql
  elif command -v psql >/dev/null 2>&1; then
    PSQL=$(command -v psql)
  else
    PSQL=""
  fi
}

# as_pg CMD...: run as the OS user that owns the cluster (postgres when we are root).
as_pg() {
  if is_root; then
    if command -v runuser >/dev/null 2>&1; then
      (cd / && runuser -u "$PG_OS_USER" -- "$@")
    else
      local q
      q=$(printf '%q ' "$@")
      (cd / && su -s /bin/sh "$PG_OS_USER" -c "$q")
    fi
  else
    "$@"
  fi
}

pg_ensure_os_user() {
  is_root || return 0
  id -u "$PG_OS_USER" >/dev/null 2>&1 && return 0
  say "postgres: creating system user $PG_OS_USER"
  useradd --system --user-group --no-create-home --home-dir /var/lib/postgresql \
    --shell /bin/sh "$PG_OS_USER" || die "could not create the $PG_OS_USER system user (initdb refuses to run as root)"
}

# As root the server runs as `postgres`, which must be able to reach $DATA_DIR. If it cannot
# (a checkout under /root, say) the cluster lives under /var/lib/gatehouse and .data/postgres
# becomes a symlink to it.
pg_relocate_if_unreachable() {
  is_root || return 0
  [[ -L $DATA_DIR/postgres ]] && return 0
  mkdir -p "$DATA_DIR"
  as_pg test -x "$DATA_DIR" 2>/dev/null && return 0
  [[ -e $DATA_DIR/postgres ]] && die "$DATA_DIR/postgres exists but user $PG_OS_USER cannot reach it"
  local alt
  alt=/var/lib/gatehouse/$(printf '%s' "$DATA_DIR" | sha256sum | cut -c1-12)
  warn "user $PG_OS_USER cannot reach $DATA_DIR; keeping the Postgres cluster in $alt (linked from $DATA_DIR/postgres)"
  mkdir -p "$alt"
  chmod 755 /var/lib/gatehouse "$alt"
  ln -sfn "$alt/postgres" "$DATA_DIR/postgres"
  pg_paths
}

pg_dsn_ok() {
  [[ -n $PSQL ]] || return 1
  PGCONNECT_TIMEOUT=3 "$PSQL" -X "$DATABASE_URL" -Atqc 'select 1' >/dev/null 2>&1
}

# pg_ours_running: our cluster's postmaster is up (postmaster.pid + a live process).
pg_ours_running() {
  local pid
  [[ -f $PGDATA_DIR/postmaster.pid ]] || return 1
  pid=$(head -n1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null | tr -dc '0-9')
  pid_alive "$pid" postgres
}

pg_running_port() { sed -n '4p' "$PGDATA_DIR/postmaster.pid" 2>/dev/null | tr -dc '0-9'; }

pg_write_conf() {
  local conf=$PGDATA_DIR/gatehouse.conf tmp
  tmp=$(mktemp)
  cat >"$tmp" <<EOF
# Written by scripts/services.sh on every start; edit the script, not this file.
listen_addresses = '$HOST'
port = $PGPORT
unix_socket_directories = '$PG_RUN'
max_connections = 200
shared_buffers = 128MB
fsync = on
timezone = 'UTC'
log_timezone = 'UTC'
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
  install -m 0600 "$tmp" "$conf"
  rm -f "$tmp"
  is_root && chown "$PG_OS_USER:" "$conf"
  if ! grep -q "^include_if_exists = 'gatehouse.conf'" "$PGDATA_DIR/postgresql.conf"; then
    printf "\n# gatehouse dev settings (scripts/services.sh)\ninclude_if_exists = 'gatehouse.conf'\n" >>"$PGDATA_DIR/postgresql.conf"
  fi
}

pg_initdb() {
  if [[ -d $PGDATA_DIR ]] && [[ -n $(ls -A "$PGDATA_DIR" 2>/dev/null) ]]; then
    die "$PGDATA_DIR is not empty but holds no cluster (no PG_VERSION); remove it and start again"
  fi
  say "postgres: initdb $PGDATA_DIR ($("$PG_BIN/postgres" --version))"
  mkdir -p "$PGDATA_DIR"
  chmod 700 "$PGDATA_DIR"
  is_root && chown "$PG_OS_USER:" "$PGDATA_DIR"
  # The bootstrap superuser is named after the OS user so that peer authentication on the
  # unix socket lets this script in without a password; TCP clients need a password.
  if ! as_pg "$PG_BIN/initdb" -D "$PGDATA_DIR" -U "$PG_OS_USER" --encoding=UTF8 --no-locale \
    --auth-local=peer --auth-host=scram-sha-256 >"$DATA_DIR/postgres-initdb.log" 2>&1; then
    tail_log "$DATA_DIR/postgres-initdb.log"
    die "postgres: initdb failed"
  fi
}

pg_bootstrap_role() {
  local out
  if ! out=$(as_pg "$PSQL" -X -h "$PG_RUN" -p "$PGPORT" -U "$PG_OS_USER" -d postgres -v ON_ERROR_STOP=1 -Atq 2>&1 <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE') THEN
    CREATE ROLE $PG_ROLE LOGIN SUPERUSER CREATEDB PASSWORD '$PG_PASSWORD';
  ELSE
    ALTER ROLE $PG_ROLE LOGIN SUPERUSER CREATEDB PASSWORD '$PG_PASSWORD';
  END IF;
END
\$\$;
SELECT 'CREATE DATABASE $PG_DATABASE OWNER $PG_ROLE'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DATABASE') \gexec
SQL
  ); then
    printf '%s\n' "$out" >&2
    die "postgres: could not create role/database $PG_ROLE"
  fi
}

pg_prepare_binaries() {
  pg_find_bin && return 0
  if is_root && command -v apt-get >/dev/null 2>&1 && [[ ${GATEHOUSE_NO_INSTALL:-0} != 1 ]]; then
    # Install postgresql-common first and tell it not to create (and start) a `main` cluster
    # on 5432, which would take the port this script wants for its own cluster.
    apt_install postgresql-common || die "apt-get install postgresql-common failed"
    if [[ -f /etc/postgresql-common/createcluster.conf ]]; then
      sed -i 's/^#\?\s*create_main_cluster\s*=.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf
    fi
    apt_install postgresql || die "apt-get install postgresql failed"
    pg_find_bin && return 0
  fi
  die "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; install PostgreSQL 15 (Debian: apt-get install postgresql-15) or set PG_BIN to their directory"
}

postgres_start() {
  local t0
  t0=$(now)
  pg_paths
  pg_find_bin || true
  pg_find_psql
  if pg_dsn_ok; then
    if pg_ours_running; then
      say "postgres: already running on $HOST:$PGPORT (pid $(head -n1 "$PGDATA_DIR/postmaster.pid"))"
    else
      say "postgres: reusing the server already on $HOST:$PGPORT (it accepts $DATABASE_URL)"
    fi
    return 0
  fi

  pg_prepare_binaries
  pg_find_psql
  [[ -n $PSQL ]] || die "psql not found (it ships with the PostgreSQL client package)"
  pg_ensure_os_user
  pg_relocate_if_unreachable

  if pg_ours_running; then
    local running
    running=$(pg_running_port)
    [[ $running == "$PGPORT" ]] || die "postgres: our cluster is running on port $running, not $PGPORT; run '$0 postgres-stop' first"
    say "postgres: running but $DATABASE_URL is refused; creating role and database"
  else
    if port_open "$PGPORT"; then
      die "postgres: $HOST:$PGPORT is taken by another server that refuses $DATABASE_URL; stop it or set PGPORT"
    fi
    mkdir -p "$DATA_DIR" "$PG_RUN"
    is_root && chown "$PG_OS_USER:" "$PG_RUN"
    [[ -s $PGDATA_DIR/PG_VERSION ]] || pg_initdb
    pg_write_conf
    local sock=$PG_RUN/.s.PGSQL.$PGPORT
    ((${#sock} < 100)) || die "postgres: socket path $sock is too long for a unix socket; use a shorter DATA_DIR"
    touch "$PG_LOG"
    is_root && chown "$PG_OS_USER:" "$PG_LOG"
    say "postgres: starting on $HOST:$PGPORT (data $PGDATA_DIR, log $PG_LOG)"
    # pg_ctl puts the postmaster in its own session, so a Ctrl-C in the terminal that ran this
    # script does not reach it.
    if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$PG_LOG" -w -t "$PG_TIMEOUT" start >/dev/null 9>&-; then
      tail_log "$PG_LOG"
      die "postgres: failed to start"
    fi
  fi

  local deadline=$(($(now) + PG_TIMEOUT))
  until "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PGPORT" -t 2; do
    if (($(now) >= deadline)); then
      tail_log "$PG_LOG"
      die "postgres: not ready after ${PG_TIMEOUT}s"
    fi
    sleep 0.3
  done
  pg_bootstrap_role
  if ! pg_dsn_ok; then
    tail_log "$PG_LOG"
    die "postgres: up, but $DATABASE_URL is refused"
  fi
  say "postgres: ready on $HOST:$PGPORT ($(($(now) - t0))s)"
}

postgres_stop() {
  pg_paths
  if ! pg_ours_running; then
    say "postgres: not running (nothing started here)"
    return 0
  fi
  pg_find_bin || die "postgres: running, but pg_ctl for $(<"$PGDATA_DIR/PG_VERSION") is not found"
  say "postgres: stopping (pid $(head -n1 "$PGDATA_DIR/postmaster.pid"))"
  if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t "$STOP_TIMEOUT" stop >/dev/null; then
    tail_log "$PG_LOG"
    die "postgres: pg_ctl stop failed"
  fi
  say "postgres: stopped"
}

postgres_status() {
  pg_paths
  pg_find_bin || true
  pg_find_psql
  if pg_ours_running; then
    local state="running"
    pg_dsn_ok || state="running (but $DATABASE_URL is refused)"
    echo "postgres: $state, pid $(head -n1 "$PGDATA_DIR/postmaster.pid"), $HOST:$(pg_running_port), data $PGDATA_DIR"
  elif pg_dsn_ok; then
    echo "postgres: external server on $HOST:$PGPORT accepts the DSN (not managed by this script)"
  else
    echo "postgres: stopped"
  fi
}

# ---------------------------------------------------------------------------------------
# Redis

REDIS_SERVER=""
REDIS_CLI=""

redis_find() {
  REDIS_SERVER=$(command -v redis-server 2>/dev/null || true)
  REDIS_CLI=$(command -v redis-cli 2>/dev/null || true)
  [[ -z $REDIS_SERVER && -x /usr/bin/redis-server ]] && REDIS_SERVER=/usr/bin/redis-server
  [[ -z $REDIS_CLI && -x /usr/bin/redis-cli ]] && REDIS_CLI=/usr/bin/redis-cli
  return 0
}

redis_ping() {
  [[ -n $REDIS_CLI ]] || return 1
  [[ $(timeout 3 "$REDIS_CLI" -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

redis_start() {
  local t0
  t0=$(now)
  redis_find
  if redis_ping; then
    local pid
    pid=$(read_pidfile "$REDIS_PIDFILE")
    if pid_alive "$pid" redis-server; then
      say "redis: already running on $HOST:$REDIS_PORT (pid $pid)"
    else
      say "redis: reusing the server already answering PING on $HOST:$REDIS_PORT"
    fi
    return 0
  fi
  if [[ -z $REDIS_SERVER || -z $REDIS_CLI ]]; then
    apt_install redis-server || die "redis-server/redis-cli not found; install Redis (Debian: apt-get install redis-server)"
    redis_find
    [[ -n $REDIS_SERVER && -n $REDIS_CLI ]] || die "redis-server installed but not found on PATH"
    # Installing the package may have started the distribution's own instance on our port.
    if redis_ping; then
      say "redis: reusing the server already answering PING on $HOST:$REDIS_PORT"
      return 0
    fi
  fi
  port_open "$REDIS_PORT" && die "redis: $HOST:$REDIS_PORT is taken by something that does not answer PING; set REDIS_PORT"
  mkdir -p "$REDIS_DIR"
  rm -f "$REDIS_PIDFILE"
  : >>"$REDIS_LOG"
  say "redis: starting on $HOST:$REDIS_PORT (dir $REDIS_DIR)"
  echo "$REDIS_PORT" >"$REDIS_DIR/port"
  if ! "$REDIS_SERVER" --daemonize yes --supervised no --bind "$HOST" --port "$REDIS_PORT" \
    --protected-mode yes --dir "$REDIS_DIR" --pidfile "$REDIS_PIDFILE" --logfile "$REDIS_LOG" \
    --save '' --appendonly no 9>&-; then
    tail_log "$REDIS_LOG"
    die "redis: redis-server failed to start"
  fi
  local deadline=$(($(now) + REDIS_TIMEOUT))
  until redis_ping; do
    if (($(now) >= deadline)); then
      tail_log "$REDIS_LOG"
      die "redis: no PONG after ${REDIS_TIMEOUT}s"
    fi
    sleep 0.2
  done
  say "redis: ready on $HOST:$REDIS_PORT ($(($(now) - t0))s)"
}

redis_stop() {
  redis_find
  local pid port
  pid=$(read_pidfile "$REDIS_PIDFILE")
  if ! pid_alive "$pid" redis-server; then
    rm -f "$REDIS_PIDFILE"
    say "redis: not running (nothing started here)"
    return 0
  fi
  port=$(cat "$REDIS_DIR/port" 2>/dev/null || echo "$REDIS_PORT")
  say "redis: stopping (pid $pid)"
  if [[ -n $REDIS_CLI ]]; then
    timeout 10 "$REDIS_CLI" -h "$HOST" -p "$port" shutdown nosave >/dev/null 2>&1 || true
  fi
  # SIGTERM shuts Redis down cleanly too, and saves nothing since persistence is off.
  if ! wait_pid_exit "$pid" 5; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_pid_exit "$pid" "$STOP_TIMEOUT"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$REDIS_PIDFILE"
  say "redis: stopped"
}

redis_status() {
  redis_find
  local pid
  pid=$(read_pidfile "$REDIS_PIDFILE")
  if pid_alive "$pid" redis-server; then
    local state=running
    redis_ping || state="running (but no PONG on $HOST:$REDIS_PORT)"
    echo "redis: $state, pid $pid, $HOST:$(cat "$REDIS_DIR/port" 2>/dev/null || echo "$REDIS_PORT"), dir $REDIS_DIR"
  elif redis_ping; then
    echo "redis: external server on $HOST:$REDIS_PORT answers PING (not managed by this script)"
  else
    echo "redis: stopped"
  fi
}

# ---------------------------------------------------------------------------------------
# Kafka

JAVA=""

kafka_find_java() {
  local j=""
  if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
    j=$JAVA_HOME/bin/java
  elif command -v java >/dev/null 2>&1; then
    j=$(command -v java)
  fi
  if [[ -z $j ]]; then
    apt_install default-jre-headless || die "java not found; Kafka needs Java 17+ (Debian: apt-get install openjdk-17-jre-headless, or set JAVA_HOME)"
    j=$(command -v java) || die "java installed but not on PATH"
  fi
  local major
  major=$("$j" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p')
  [[ -n $major ]] || die "could not run $j"
  ((major >= 17)) || die "Kafka 4.x needs Java 17 or newer; $j is Java $major (set JAVA_HOME)"
  JAVA=$j
}

pom_hash() { sha256sum "$KAFKA_POM" | cut -c1-64; }

# kafka_fetch_libs runs Maven only when the libs dir was not completed for this exact pom.xml.
kafka_fetch_libs() {
  local want stamp=$KAFKA_LIBS/.complete
  want=$(pom_hash)
  if [[ -f $stamp && $(<"$stamp") == "$want" ]]; then
    return 0
  fi
  local mvn
  mvn=$(command -v mvn 2>/dev/null || true)
  if [[ -z $mvn ]]; then
    apt_install maven || die "mvn not found; it is needed once to fetch Kafka from Maven Central (Debian: apt-get install maven)"
    mvn=$(command -v mvn) || die "maven installed but mvn is not on PATH"
  fi
  local t0 tmp=$KAFKA_HOME/libs.tmp
  t0=$(now)
  say "kafka: fetching org.apache.kafka:kafka_2.13 and its dependencies with Maven (once)"
  mkdir -p "$KAFKA_HOME"
  rm -rf "$tmp"
  # shellcheck disable=SC2086 # MVN_FLAGS is a list of flags
  if ! "$mvn" -q -B -Dstyle.color=never ${MVN_FLAGS:-} -f "$KAFKA_POM" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >"$KAFKA_HOME/mvn.log" 2>&1; then
    tail_log "$KAFKA_HOME/mvn.log"
    die "kafka: mvn dependency:copy-dependencies failed (log $KAFKA_HOME/mvn.log)"
  fi
  ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "kafka: Maven finished but kafka_2.13 is not in $tmp"
  echo "$want" >"$tmp/.complete"
  rm -rf "$KAFKA_LIBS"
  mv "$tmp" "$KAFKA_LIBS"
  say "kafka: $(find "$KAFKA_LIBS" -name '*.jar' | wc -l) jars in $KAFKA_LIBS ($(($(now) - t0))s)"
}

kafka_write_config() {
  mkdir -p "$KAFKA_HOME/data"
  cat >"$KAFKA_HOME/server.properties" <<EOF
# Written by scripts/services.sh on every start; edit the script, not this file.
# Single node, combined broker + controller (KRaft), loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_HOME/data
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
# After a kill -9 the dead broker's registration blocks the restarted one until its session
# expires (default 9s); chaos tests restart Kafka, so expire it sooner.
broker.session.timeout.ms=5000
broker.heartbeat.interval.ms=1000
num.network.threads=2
num.io.threads=4
log.retention.hours=72
EOF
  cat >"$KAFKA_HOME/log4j2.properties" <<EOF
# Broker logging: everything at INFO into server.log (rolled at 50MB, 3 kept).
status = warn
appender.server.type = RollingFile
appender.server.name = server
appender.server.fileName = $KAFKA_LOG
appender.server.filePattern = $KAFKA_LOG.%i
appender.server.layout.type = PatternLayout
appender.server.layout.pattern = [%d] %p %m (%c)%n
appender.server.policies.type = Policies
appender.server.policies.size.type = SizeBasedTriggeringPolicy
appender.server.policies.size.size = 50MB
appender.server.strategy.type = DefaultRolloverStrategy
appender.server.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.server.ref = server
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
EOF
  cat >"$KAFKA_HOME/tools-log4j2.properties" <<EOF
# Command-line tools (storage format, topics): warnings and errors on stderr only.
status = warn
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = err
EOF
  cat >"$KAFKA_HOME/admin.properties" <<EOF
# Client settings for the topic tool: fail fast while the broker is still starting.
request.timeout.ms=5000
default.api.timeout.ms=10000
EOF
}

# kafka_tool SECONDS CLASS ARGS...: a short-lived JVM from the same jars, bounded in time.
kafka_tool() {
  local secs=$1
  shift
  timeout "$secs" "$JAVA" -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$KAFKA_HOME/tools-log4j2.properties" \
    -cp "$KAFKA_LIBS/*" "$@" 9>&-
}

new_cluster_id() {
  # A Kafka Uuid: 16 random bytes, base64url without padding; never starting with '-'.
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ $id == -* ]] || break
  done
  echo "$id"
}

kafka_format() {
  [[ -f $KAFKA_HOME/data/meta.properties ]] && return 0
  [[ -s $KAFKA_HOME/cluster-id ]] || new_cluster_id >"$KAFKA_HOME/cluster-id"
  local cid
  cid=$(<"$KAFKA_HOME/cluster-id")
  say "kafka: formatting $KAFKA_HOME/data (cluster id $cid, standalone KRaft controller)"
  if ! kafka_tool 120 kafka.tools.StorageTool format --config "$KAFKA_HOME/server.properties" \
    --cluster-id "$cid" --standalone --ignore-formatted >"$KAFKA_HOME/format.log" 2>&1; then
    tail_log "$KAFKA_HOME/format.log"
    die "kafka: storage format failed"
  fi
}

kafka_pid() {
  local pid
  pid=$(read_pidfile "$KAFKA_PIDFILE")
  if pid_alive "$pid" "$KAFKA_HOME/server.properties"; then echo "$pid"; fi
}

kafka_fail() {
  tail_log "$KAFKA_LOG" "$KAFKA_OUT"
  if grep -qE '^\[[^]]*\] (ERROR|FATAL) ' "$KAFKA_LOG" 2>/dev/null; then
    printf -- '---- first errors in %s ----\n' "$KAFKA_LOG" >&2
    grep -m 5 -E '^\[[^]]*\] (ERROR|FATAL) ' "$KAFKA_LOG" >&2 || true
    printf -- '----\n' >&2
  fi
  die "$@"
}

# kafka_launch starts the JVM in the background and returns at once (see kafka_wait), so that
# Postgres and Redis can start while the broker boots.
kafka_launch() {
  KAFKA_T0=$(now)
  KAFKA_LAUNCHED=0
  local pid
  kafka_find_java
  pid=$(kafka_pid)
  # Running already: keep its jars even if pom.xml changed (kafka-stop, kafka-start refetches).
  [[ -z $pid ]] || return 0
  kafka_fetch_libs
  if port_open "$KAFKA_PORT"; then
    # Not ours; kafka_wait reuses it if it serves the topics.
    return 0
  fi
  if port_open "$KAFKA_CONTROLLER_PORT"; then
    die "kafka: the controller port $HOST:$KAFKA_CONTROLLER_PORT is taken by another program; set KAFKA_CONTROLLER_PORT"
  fi
  kafka_write_config
  kafka_format
  : >>"$KAFKA_LOG"
  say "kafka: starting on $HOST:$KAFKA_PORT (data $KAFKA_HOME/data, log $KAFKA_LOG)"
  local -a launcher=()
  command -v setsid >/dev/null 2>&1 && launcher=(setsid)
  # shellcheck disable=SC2086 # KAFKA_HEAP_OPTS and KAFKA_JVM_OPTS are lists of flags
  (
    cd "$KAFKA_HOME"
    exec "${launcher[@]}" nohup "$JAVA" $KAFKA_HEAP_OPTS $KAFKA_JVM_OPTS -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$KAFKA_HOME/log4j2.properties" -Dkafka.logs.dir="$KAFKA_HOME" \
      -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_HOME/server.properties"
  ) >"$KAFKA_OUT" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$KAFKA_PIDFILE"
  KAFKA_LAUNCHED=1
}

kafka_list_topics() {
  kafka_tool 30 org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BROKERS" \
    --command-config "$KAFKA_HOME/admin.properties" --list 2>>"$KAFKA_HOME/topics.log"
}

kafka_ensure_topics() {
  local existing
  existing=$1
  local t name parts
  local -a pids=() names=()
  for t in "${KAFKA_TOPICS[@]}"; do
    name=${t%%:*}
    parts=${t##*:}
    grep -qxF "$name" <<<"$existing" && continue
    kafka_tool 60 org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BROKERS" \
      --command-config "$KAFKA_HOME/admin.properties" --create --if-not-exists \
      --topic "$name" --partitions "$parts" --replication-factor 1 >>"$KAFKA_HOME/topics.log" 2>&1 &
    pids+=($!)
    names+=("$name")
  done
  local i rc=0
  for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then
      say "kafka: created topic ${names[$i]}"
    else
      rc=1
    fi
  done
  return $rc
}

# kafka_wait: until the broker accepts connections and the three topics exist, bounded.
kafka_wait() {
  local deadline=$(($(now) + KAFKA_TIMEOUT)) pid existing missing t
  pid=$(kafka_pid)
  [[ -n $pid ]] || port_open "$KAFKA_PORT" || kafka_fail "kafka: not running"
  mkdir -p "$KAFKA_HOME"
  [[ -f $KAFKA_HOME/admin.properties ]] || kafka_write_config
  : >"$KAFKA_HOME/topics.log"
  while :; do
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$KAFKA_PIDFILE"
      kafka_fail "kafka: the broker exited during startup"
    fi
    if (($(now) >= deadline)); then
      tail_log "$KAFKA_HOME/topics.log"
      kafka_fail "kafka: not ready after ${KAFKA_TIMEOUT}s"
    fi
    if ! port_open "$KAFKA_PORT"; then
      sleep 0.5
      continue
    fi
    if ! existing=$(kafka_list_topics); then
      sleep 1
      continue
    fi
    missing=0
    for t in "${KAFKA_TOPICS[@]}"; do
      grep -qxF "${t%%:*}" <<<"$existing" || missing=1
    done
    ((missing)) || break
    if [[ -z $pid ]]; then
      say "kafka: $HOST:$KAFKA_PORT is served by a broker not started here; creating the missing topics on it"
    fi
    kafka_ensure_topics "$existing" || sleep 1
  done
  if ((KAFKA_LAUNCHED)); then
    say "kafka: ready on $KAFKA_BROKERS ($(($(now) - KAFKA_T0))s)"
  elif [[ -n $pid ]]; then
    say "kafka: already running on $KAFKA_BROKERS (pid $pid)"
  else
    say "kafka: reusing the broker already on $KAFKA_BROKERS"
  fi
}

kafka_stop() {
  local pid
  pid=$(kafka_pid)
  if [[ -z $pid ]]; then
    rm -f "$KAFKA_PIDFILE"
    say "kafka: not running (nothing started here)"
    return 0
  fi
  say "kafka: stopping (pid $pid)"
  local t0
  t0=$(now)
  # SIGTERM runs the broker's controlled shutdown, which flushes and closes the logs cleanly.
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_pid_exit "$pid" "$STOP_TIMEOUT"; then
    warn "kafka: still running after ${STOP_TIMEOUT}s, killing it"
    kill -KILL "$pid" 2>/dev/null || true
    wait_pid_exit "$pid" 10 || true
  fi
  rm -f "$KAFKA_PIDFILE"
  say "kafka: stopped ($(($(now) - t0))s)"
}

kafka_status() {
  local pid
  pid=$(kafka_pid)
  if [[ -n $pid ]]; then
    local state=running
    port_open "$KAFKA_PORT" || state="starting (port $KAFKA_PORT not open yet)"
    echo "kafka: $state, pid $pid, $KAFKA_BROKERS, data $KAFKA_HOME/data"
  elif port_open "$KAFKA_PORT"; then
    echo "kafka: something not started by this script listens on $KAFKA_BROKERS"
  else
    echo "kafka: stopped"
  fi
}

# ---------------------------------------------------------------------------------------
# commands

# env_lines [SERVICE...]: the connection settings, all three by default.
env_lines() {
  local s
  (($#)) || set -- "${ALL_SERVICES[@]}"
  for s in "$@"; do
    case $s in
      postgres) echo "DATABASE_URL=$DATABASE_URL" ;;
      redis) echo "REDIS_URL=$REDIS_URL" ;;
      kafka) echo "KAFKA_BROKERS=$KAFKA_BROKERS" ;;
    esac
  done
}

write_env_file() {
  mkdir -p "$DATA_DIR"
  env_lines >"$DATA_DIR/services.env"
}

services_of() {
  local s
  if (($# == 0)); then
    echo "${ALL_SERVICES[@]}"
    return
  fi
  for s in "$@"; do
    case $s in
      postgres | redis | kafka) ;;
      *) die "unknown service '$s' (postgres, redis, kafka)" ;;
    esac
  done
  echo "$@"
}

cmd_start() {
  local -a svcs
  read -ra svcs <<<"$(services_of "$@")"
  take_lock
  local t0 s
  t0=$(now)
  local want_kafka=0
  for s in "${svcs[@]}"; do [[ $s == kafka ]] && want_kafka=1; done
  # Kafka's JVM is the slowest to boot: launch it first, start the others meanwhile.
  if ((want_kafka)); then kafka_launch; fi
  for s in "${svcs[@]}"; do
    case $s in
      postgres) postgres_start ;;
      redis) redis_start ;;
    esac
  done
  if ((want_kafka)); then kafka_wait; fi
  write_env_file
  say "ready: ${svcs[*]} ($(($(now) - t0))s); env in $DATA_DIR/services.env"
  env_lines "${svcs[@]}"
}

cmd_stop() {
  local -a svcs
  read -ra svcs <<<"$(services_of "$@")"
  take_lock
  local s
  for s in "${svcs[@]}"; do
    case $s in
      postgres) postgres_stop ;;
      redis) redis_stop ;;
      kafka) kafka_stop ;;
    esac
  done
}

cmd_status() {
  local -a svcs
  read -ra svcs <<<"$(services_of "$@")"
  local s
  for s in "${svcs[@]}"; do
    case $s in
      postgres) postgres_status ;;
      redis) redis_status ;;
      kafka) kafka_status ;;
    esac
  done
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

main() {
  local cmd=${1:-}
  (($#)) && shift
  case $cmd in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    restart)
      cmd_stop "$@"
      exec 9>&-
      cmd_start "$@"
      ;;
    status) cmd_status "$@" ;;
    env) env_lines ;;
    postgres-start | redis-start | kafka-start) cmd_start "${cmd%-start}" ;;
    postgres-stop | redis-stop | kafka-stop) cmd_stop "${cmd%-stop}" ;;
    postgres-status | redis-status | kafka-status) cmd_status "${cmd%-status}" ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
