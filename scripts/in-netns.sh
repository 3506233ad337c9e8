#!/usr/bin/env bash
# Runs a command inside a fresh network namespace made for it, and removes the namespace (and
# every process left in it) afterwards. All bridges, TAPs and VM traffic of a test live there.
#   usage: scripts/in-netns.sh COMMAND [ARGS...]
set -euo pipefail
ns="ct-test-$$-${RANDOM}"
cleanup() {
  # Namespaces a test derived from ours ("$ns-…") go too, even if the test died before its cleanup.
  local extra
  for extra in $(ip netns list | awk '{print $1}' | grep "^${ns}-" || true); do
    ip netns pids "$extra" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$extra" 2>/dev/null || true
  done
  local pids
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  if [ -n "$pids" ]; then kill -9 $pids 2>/dev/null || true; sleep 0.5; fi
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
ip netns add "$ns"
ip -n "$ns" link set lo up
export CLARATEACH_TEST_NETNS="$ns"
# `ip netns exec` mounts a fresh /sys in a private mount namespace, which hides the cgroup
# hierarchies the agent puts VMMs in: mount them again there (the host's mounts are untouched).
export CLARATEACH_CGROUP_MOUNTS
CLARATEACH_CGROUP_MOUNTS=$(awk '$3 == "cgroup" || $3 == "cgroup2" || ($2 == "/sys/fs/cgroup" && $3 == "tmpfs") {print $1, $2, $3, $4}' /proc/self/mounts)
set +e
ip netns exec "$ns" bash -c '
  while read -r src target type opts; do
    [ -n "$target" ] || continue
    mkdir -p "$target" 2>/dev/null
    mount -t "$type" -o "$opts" "$src" "$target" || echo "in-netns: could not mount $type at $target" >&2
  done <<<"$CLARATEACH_CGROUP_MOUNTS"
  exec "$@"' bash "$@"
status=$?
set -e
exit $status
