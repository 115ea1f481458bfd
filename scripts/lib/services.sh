# Shared by scripts/test and deploy/local: make sure Redis and PostgreSQL are installed and running
# on this machine. Installs with apt-get only what is missing; starts only what is stopped; never
# reconfigures a server it did not install.

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    $SUDO apt-get update -qq >/dev/null
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

ensure_redis() {
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    echo "installing redis-server (apt-get)"
    apt_install redis-server redis-tools
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "starting redis-server on 127.0.0.1:6379"
    $SUDO mkdir -p /var/lib/redis /var/log/redis
    $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
      --appendonly no --dir /var/lib/redis --logfile /var/log/redis/fleetgate.log
    for _ in $(seq 1 50); do
      redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break
      sleep 0.1
    done
  fi
  redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null || { echo "redis did not start" >&2; return 1; }
}

# nginx: deploy/local puts it in front of the replicas, and a gateway test puts three gateway
# replicas behind it. Only installed (nginx-light, else nginx), never started here: its users run
# their own instance with a configuration of their own.
ensure_nginx() {
  if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    echo "installing nginx (apt-get)"
    apt_install nginx-light || apt_install nginx
  fi
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "nginx could not be installed" >&2; return 1; }
}

# libfaketime: the clock-skew fleet test runs replicas with a skewed wall clock.
ensure_faketime() {
  if ! command -v faketime >/dev/null; then
    echo "installing faketime (apt-get)"
    apt_install faketime
  fi
}

ensure_postgres() {
  local fresh=""
  if ! command -v pg_ctlcluster >/dev/null; then
    echo "installing postgresql (apt-get)"
    apt_install postgresql postgresql-client
    fresh=1
  fi
  if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$version" ]; then
      version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
      $SUDO pg_createcluster "$version" main >/dev/null
      fresh=1
    fi
    if [ -n "$fresh" ]; then
      # A server we just installed: let local test connections in without a password, as on the
      # development machines (trust on loopback only).
      local hba="/etc/postgresql/$version/main/pg_hba.conf"
      $SUDO sed -i -E 's/^(local|host)(\s+all\s+all\s+.*)(scram-sha-256|md5|peer)$/\1\2trust/' "$hba"
      $SUDO sed -i -E 's/^(local\s+all\s+postgres\s+)peer$/\1trust/' "$hba"
    fi
    echo "starting postgresql $version"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 100); do
      pg_isready -h 127.0.0.1 -p 5432 -q && break
      sleep 0.1
    done
  fi
  pg_isready -h 127.0.0.1 -p 5432 -q || { echo "postgresql did not start" >&2; return 1; }
}

# A Python environment with what some tests use (scripts/requirements-test.txt): the independent
# BibTeX/RIS parsers, and pytest with Playwright for the browser tests (Playwright drives the
# system's Chromium; it never downloads a browser of its own).
ensure_test_python() {
  local env=.fleet/pyenv
  if [ ! -x "$env/bin/python" ]; then
    if ! python3 -m venv "$env" >/dev/null 2>&1; then
      apt_install python3-venv
      python3 -m venv "$env"
    fi
  fi
  # Installed again whenever the pinned list changes (a copy of it marks what is installed).
  if ! cmp -s scripts/requirements-test.txt "$env/requirements-test.txt"; then
    echo "installing test packages (pip)"
    "$env/bin/pip" install -q -r scripts/requirements-test.txt
    cp scripts/requirements-test.txt "$env/requirements-test.txt"
  fi
}

# Headless Chromium for the browser tests (Debian's package, without its recommended extras).
ensure_chromium() {
  if ! command -v chromium >/dev/null 2>&1; then
    echo "installing chromium (apt-get)"
    apt_install --no-install-recommends chromium fonts-liberation
  fi
}

# promtool (Debian's prometheus package) for checking the alert rules and scrape config.
ensure_promtool() {
  if ! command -v promtool >/dev/null 2>&1; then
    apt_install prometheus
    # The package starts a Prometheus server; the project only needs promtool.
    (service prometheus stop || systemctl stop prometheus || pkill -x prometheus) >/dev/null 2>&1 || true
  fi
}
