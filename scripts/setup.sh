#!/usr/bin/env bash
# Sets up a fresh Debian 12 worker and starts the agent:
#   1. Debian and npm packages (scripts/install-deps.sh)
#   2. the guest image in IMAGES_DIR (clarateach image build; quick when nothing changed)
#   3. the systemd unit clarateach-agent, enabled and started (without systemd: the agent runs
#      in the foreground)
# Options: --deps-only (step 1 only), --no-start (steps 1-2), --server (the workshop server
# instead of an agent: step 1, then the unit clarateach-server; no guest image).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
mode=all
case "${1:-}" in
  --deps-only) mode=deps ;;
  --no-start) mode=image ;;
  --server) mode=server ;;
  "") ;;
  *) echo "usage: scripts/setup.sh [--deps-only|--no-start|--server]" >&2; exit 2 ;;
esac

step() { echo; echo "==> [$1/3] $2"; }

step 1 "packages"
scripts/install-deps.sh
[ "$mode" = deps ] && exit 0

# service NAME COMMAND PORT SETTINGS [NOTE]: runs `clarateach COMMAND` as the systemd unit NAME
# (deploy/NAME.service; /etc/clarateach/SETTINGS.env written from stdin unless it exists), then
# waits until PORT answers /health. Without systemd it runs COMMAND in the foreground instead.
service() {
  local name=$1 command=$2 port=$3 env_file=/etc/clarateach/$4.env note=${5:-}
  if [ ! -d /run/systemd/system ]; then
    echo "no systemd here: running ${name} in the foreground (Ctrl-C stops it${note})"
    exec node bin/clarateach.js "$command"
  fi
  mkdir -p /etc/clarateach
  [ -f "$env_file" ] || cat > "$env_file"
  sed -e "s|@ROOT@|${root}|g" -e "s|@NODE@|$(command -v node)|g" "deploy/${name}.service" > "/etc/systemd/system/${name}.service"
  systemctl daemon-reload
  systemctl enable "$name" >/dev/null
  systemctl restart "$name"
  for _ in $(seq 1 60); do
    if curl -fsS "localhost:${port}/health" 2>/dev/null; then echo; echo "${name} is running: sudo systemctl status ${name}"; exit 0; fi
    sleep 1
  done
  echo "${name} did not answer on port ${port}; see: sudo journalctl -u ${name} -n 50" >&2
  exit 1
}

if [ "$mode" = server ]; then
  if [ -f /etc/clarateach/server.env ]; then set -a; . /etc/clarateach/server.env; set +a; fi
  step 2 "workshop server (no guest image needed)"
  echo "the first instructor signs up in a browser at the URL the server logs (sudo journalctl -u clarateach-server | grep setup=)"
  echo "  or, with the server stopped: sudo npx clarateach instructor add EMAIL (password on stdin)"
  step 3 "workshop server"
  service clarateach-server server "${PORT:-8080}" server <<'ENV'
# ClaraTeach workshop server settings (see README, The workshop server). Without DATABASE_URL
# the state is in an embedded database in DATA_DIR.
#PORT=8080
#HOST=0.0.0.0
#DATA_DIR=/var/lib/clarateach/server
#DATABASE_URL=postgres://clarateach@localhost/clarateach
ENV
fi

if [ -f /etc/clarateach/agent.env ]; then set -a; . /etc/clarateach/agent.env; set +a; fi
step 2 "guest image into ${IMAGES_DIR:-/var/lib/clarateach/images}"
node bin/clarateach.js image build
[ "$mode" = image ] && exit 0

step 3 "agent"
service clarateach-agent agent "${PORT:-9090}" agent "; VMs keep running" <<'ENV'
# ClaraTeach agent settings (see README, Configuration). Without AGENT_TOKEN the agent listens
# on loopback only.
#AGENT_TOKEN=change-me
#HOST=0.0.0.0
#CAPACITY=50
ENV
