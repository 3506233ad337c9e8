#!/usr/bin/env bash
# Sets up a fresh Debian 12 worker and starts the agent:
#   1. Debian and npm packages (scripts/install-deps.sh)
#   2. the guest image in IMAGES_DIR (clarateach image build; quick when nothing changed)
#   3. the systemd unit clarateach-agent, enabled and started (without systemd: the agent runs
#      in the foreground)
# Options: --deps-only (step 1 only), --no-start (steps 1-2).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
mode=all
case "${1:-}" in
  --deps-only) mode=deps ;;
  --no-start) mode=image ;;
  "") ;;
  *) echo "usage: scripts/setup.sh [--deps-only|--no-start]" >&2; exit 2 ;;
esac

step() { echo; echo "==> [$1/3] $2"; }

step 1 "packages"
scripts/install-deps.sh
[ "$mode" = deps ] && exit 0

if [ -f /etc/clarateach/agent.env ]; then set -a; . /etc/clarateach/agent.env; set +a; fi
step 2 "guest image into ${IMAGES_DIR:-/var/lib/clarateach/images}"
node bin/clarateach.js image build
[ "$mode" = image ] && exit 0

step 3 "agent"
if [ -d /run/systemd/system ]; then
  mkdir -p /etc/clarateach
  if [ ! -f /etc/clarateach/agent.env ]; then
    cat > /etc/clarateach/agent.env <<'ENV'
# ClaraTeach agent settings (see README, Configuration). Without AGENT_TOKEN the agent listens
# on loopback only.
#AGENT_TOKEN=change-me
#HOST=0.0.0.0
#CAPACITY=50
ENV
  fi
  sed -e "s|@ROOT@|${root}|g" -e "s|@NODE@|$(command -v node)|g" deploy/clarateach-agent.service > /etc/systemd/system/clarateach-agent.service
  systemctl daemon-reload
  systemctl enable clarateach-agent >/dev/null
  systemctl restart clarateach-agent
  port=${PORT:-9090}
  for _ in $(seq 1 60); do
    if curl -fsS "localhost:${port}/health" 2>/dev/null; then echo; echo "agent is running: sudo systemctl status clarateach-agent"; exit 0; fi
    sleep 1
  done
  echo "agent did not answer on port ${port}; see: sudo journalctl -u clarateach-agent -n 50" >&2
  exit 1
fi
echo "no systemd here: running the agent in the foreground (Ctrl-C stops it; VMs keep running)"
exec node bin/clarateach.js agent
