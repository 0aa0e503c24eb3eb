# Shared by the test scripts (sourced, never run): where things are, how to say things, how to
# install a Debian package, and which test servers the tests use.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="$ROOT/.cache"
LOGS="$CACHE/logs"
VENV="$CACHE/venv"
LINT_VENV="$CACHE/lint-venv" # hadolint and checkov, apart: their pins fight the test tools
REQS="$ROOT/scripts/requirements-test.txt"
: "${MONGO_PORT:=27117}" # scripts/test picks a free one for its own server
# What scripts/services started (so `scripts/services stop` stops exactly that), and where
# SecantusDB logs: one of each per port, so a `scripts/test` beside a `scripts/services run` in
# the same checkout keeps to its own.
SERVICES_STATE="$CACHE/services-$MONGO_PORT.state"
MONGO_LOG="$LOGS/secantus-$MONGO_PORT.log"
mkdir -p "$LOGS"

if [[ $EUID -eq 0 ]]; then SUDO=(); else SUDO=(sudo); fi

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# run_logged NAME CMD...: run quietly, output to .cache/logs/NAME.log; show its tail on failure.
run_logged() {
  local name=$1; shift
  local log="$LOGS/$name.log"
  if ! "$@" >"$log" 2>&1; then
    printf 'ERROR: "%s" failed; last lines of %s:\n' "$*" "$log" >&2
    tail -n 40 "$log" >&2
    return 1
  fi
}

# tcp_open PORT: something accepts connections on 127.0.0.1:PORT.
tcp_open() {
  timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# ---------------------------------------------------------------------------------------------
# apt helper: `apt-get update` at most once per run, and only when something is installed.
APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null || die "need Debian packages ($*) but apt-get is not available; install them by hand"
  export DEBIAN_FRONTEND=noninteractive
  if [[ $APT_UPDATED == 0 ]]; then
    note "apt-get update"
    local try
    for try in 1 2 3; do
      if run_logged apt-update "${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 -q update; then break; fi
      [[ $try == 3 ]] && die "apt-get update failed"
      sleep 10
    done
    APT_UPDATED=1
  fi
  note "apt-get install $*"
  run_logged apt-install "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get -o DPkg::Lock::Timeout=600 -q -y --no-install-recommends install "$@"
}

# ---------------------------------------------------------------------------------------------
# The test servers (a preset URL means: not ours to manage).
# Decided once, by the first script (scripts/test), and inherited by the scripts it runs: the
# defaults below are exported, so a child would otherwise take them for presets and neither
# install nor start MariaDB and RabbitMQ on a machine that lacks them.
: "${MYSQL_TEST_URL_PRESET=${MYSQL_TEST_URL:+1}}"
: "${AMQP_TEST_URL_PRESET=${AMQP_TEST_URL:+1}}"
: "${MONGODB_TEST_URI_PRESET=${MONGODB_TEST_URI:+1}}"
export MYSQL_TEST_URL_PRESET AMQP_TEST_URL_PRESET MONGODB_TEST_URI_PRESET
: "${MYSQL_TEST_URL:=mysql://root@127.0.0.1:3306}"
: "${AMQP_TEST_URL:=amqp://guest:guest@127.0.0.1:5672/%2f}"
: "${MONGODB_TEST_URI:=mongodb://127.0.0.1:${MONGO_PORT}/?directConnection=true}"
export MYSQL_TEST_URL AMQP_TEST_URL MONGODB_TEST_URI

mysql_tcp_ok() { mariadb -uroot -h127.0.0.1 -P3306 --connect-timeout=3 -e 'select 1' >/dev/null 2>&1; }
mysql_sock_ok() { "${SUDO[@]}" mariadb -uroot --protocol=socket --connect-timeout=3 -e 'select 1' >/dev/null 2>&1; }
mysql_up() { command -v mariadb >/dev/null && { mysql_tcp_ok || mysql_sock_ok; }; }
rabbit_up() { tcp_open 5672; }
mongo_ping() {
  "$VENV/bin/python" - "$MONGODB_TEST_URI" <<'EOF' >/dev/null 2>&1
import sys, pymongo
pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=500).admin.command("ping")
EOF
}


# The tools scripts/install puts in place come first on PATH.
CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
KUBECTL_VERSION=v1.32.4
export CHROMIUM_PATH
export PATH="$VENV/bin:$ROOT/node_modules/.bin:$CACHE/bin:$PATH"
