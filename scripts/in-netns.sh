#!/usr/bin/env bash
# Runs a command inside a fresh network namespace made for it, and removes the namespace (and
# every process left in it) afterwards. All bridges, TAPs and VM traffic of a test live there.
#   usage: scripts/in-netns.sh COMMAND [ARGS...]
set -euo pipefail
ns="ct-test-$$-${RANDOM}"
cleanup() {
  local pids
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  if [ -n "$pids" ]; then kill -9 $pids 2>/dev/null || true; sleep 0.5; fi
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
ip netns add "$ns"
ip -n "$ns" link set lo up
export CLARATEACH_TEST_NETNS="$ns"
set +e
ip netns exec "$ns" "$@"
status=$?
set -e
exit $status
