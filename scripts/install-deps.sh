#!/usr/bin/env bash
# Installs the Debian packages ClaraTeach needs (only those missing) and the npm packages.
# Used by scripts/setup.sh and by CI. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

# QEMU (the microvm hypervisor); mmdebstrap, busybox, cpio, e2fsprogs, kmod, xz, zstd (the guest
# image); iproute2, nftables (bridge, TAPs, NAT); ping, curl, jq (scripts/test-e2e-local.sh);
# python3, make, g++ (native npm modules build from source: no prebuilt binaries are fetched);
# chromium (the learner page's browser tests, headless); postgresql (the workshop server's tests
# run a real PostgreSQL 15 cluster in a temp dir, as the postgres user); socat (the benchmark's
# reference relay).
PACKAGES=(
  qemu-system-x86 qemu-utils mmdebstrap busybox-static cpio e2fsprogs kmod xz-utils zstd
  iproute2 nftables iputils-ping curl jq ca-certificates python3 make g++ chromium postgresql socat
)

if [ "$(id -u)" -ne 0 ]; then echo "install-deps: run as root (sudo)" >&2; exit 1; fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "==> Debian packages: all present"
fi

if ! command -v node >/dev/null 2>&1; then
  echo "install-deps: Node.js 20 or newer is required (Debian 12's nodejs is 18; install Node 20 first)" >&2
  exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "install-deps: Node.js $(node --version) is too old; 20 or newer is required" >&2
  exit 1
fi

# Native modules build against the installed Node's own headers when it has them (Debian's and
# NodeSource's packages do), so nothing is downloaded for them.
node_headers="$(dirname "$(dirname "$(command -v node)")")"
if [ -z "${npm_config_nodedir:-}" ] && [ -f "${node_headers}/include/node/node_api.h" ]; then
  export npm_config_nodedir="$node_headers"
fi

echo "==> npm ci"
npm ci --no-audit --no-fund

# The agent relays large downloads in the kernel with it (eBPF sockmap); without it, in user space.
echo "==> the kernel relay's addon (native/sockmap-relay)"
npm run build:native --silent || echo "install-deps: the kernel relay's addon did not build; the agent will relay downloads itself" >&2

echo "==> the learner page (src/learner-page -> dist/learner-page)"
npm run build
