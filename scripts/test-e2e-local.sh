#!/usr/bin/env bash
# End-to-end test of a running ClaraTeach agent, as described in the operators' testing guide:
# health, create SEATS microVMs, list, ping, proxy health, details, and cleanup on exit.
#
#   AGENT_URL    agent base URL             (default http://localhost:9090)
#   AGENT_TOKEN  bearer token, if the agent requires one
#   WORKSHOP_ID  workshop to create VMs in  (default e2e-test-<unix time>)
#   SEATS        number of VMs              (default 3)
#   TIMEOUT      seconds to wait for each VM to answer ping and its services (default 120)
#
# Exits non-zero if any check fails. Needs curl, jq and ping.
set -uo pipefail

AGENT_URL="${AGENT_URL:-http://localhost:9090}"
AGENT_URL="${AGENT_URL%/}"
AGENT_TOKEN="${AGENT_TOKEN:-}"
WORKSHOP_ID="${WORKSHOP_ID:-e2e-test-$(date +%s)}"
SEATS="${SEATS:-3}"
TIMEOUT="${TIMEOUT:-120}"

PASSED=0
FAILED=0
CREATED=()

if [ -t 1 ]; then GREEN=$'\e[32m'; RED=$'\e[31m'; YELLOW=$'\e[33m'; RESET=$'\e[0m'; else GREEN=''; RED=''; YELLOW=''; RESET=''; fi

pass() { echo "${GREEN}[✓]${RESET} $*"; PASSED=$((PASSED + 1)); }
fail() { echo "${RED}[✗]${RESET} $*"; FAILED=$((FAILED + 1)); }
info() { echo "${YELLOW}[i]${RESET} $*"; }
line() { echo "=============================================="; }

for tool in curl jq ping; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is required (apt-get install curl jq iputils-ping)" >&2; exit 2; }
done
case "$SEATS" in ''|*[!0-9]*) echo "error: SEATS must be a positive whole number" >&2; exit 2 ;; esac
case "$TIMEOUT" in ''|*[!0-9]*) echo "error: TIMEOUT must be a whole number of seconds" >&2; exit 2 ;; esac
[ "$SEATS" -ge 1 ] || { echo "error: SEATS must be at least 1" >&2; exit 2; }

# api METHOD PATH [JSON]: prints the body, then the HTTP status on the last line.
api() {
  local method=$1 path=$2 data=${3:-}
  local args=(-sS -m 60 -X "$method" -w '\n%{http_code}' "${AGENT_URL}${path}")
  [ -n "$AGENT_TOKEN" ] && args+=(-H "Authorization: Bearer ${AGENT_TOKEN}")
  [ -n "$data" ] && args+=(-H 'Content-Type: application/json' -d "$data")
  curl "${args[@]}" 2>&1 || printf '\n000'
}
body_of() { sed '$d' <<<"$1"; }
status_of() { tail -n1 <<<"$1"; }

cleanup() {
  if [ "${#CREATED[@]}" -gt 0 ]; then
    echo
    echo "=== Cleanup ==="
    for seat in "${CREATED[@]}"; do
      local res
      res=$(api DELETE "/vms/${WORKSHOP_ID}/${seat}")
      if [ "$(status_of "$res")" = "204" ]; then info "Deleted VM seat ${seat}"; else info "Could not delete VM seat ${seat}: $(body_of "$res")"; fi
    done
    CREATED=()
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

line
echo "ClaraTeach E2E Test - Local Firecracker"
line
echo "Agent URL: ${AGENT_URL}"
echo "Workshop ID: ${WORKSHOP_ID}"
echo "Seats: ${SEATS}"
echo

echo "=== Test 1: Agent Health Check ==="
res=$(api GET /health)
if [ "$(status_of "$res")" = "200" ] && [ "$(body_of "$res" | jq -r '.status' 2>/dev/null)" = "healthy" ]; then
  pass "Agent is healthy (worker: $(body_of "$res" | jq -r '.worker_id'))"
else
  fail "Agent is not healthy at ${AGENT_URL}/health: $(body_of "$res")"
  echo
  line; echo "Test Summary"; line
  echo "Passed: ${PASSED}"; echo "Failed: ${FAILED}"; echo; echo "Tests failed!"
  exit 1
fi
echo

echo "=== Test 2: Create MicroVMs ==="
declare -A IPS=()
for seat in $(seq 1 "$SEATS"); do
  res=$(api POST /vms "{\"workshop_id\":\"${WORKSHOP_ID}\",\"seat_id\":${seat}}")
  if [ "$(status_of "$res")" = "201" ]; then
    ip=$(body_of "$res" | jq -r '.ip')
    IPS[$seat]=$ip
    CREATED+=("$seat")
    pass "Created VM seat ${seat} with IP ${ip}"
  else
    fail "Create VM seat ${seat} failed (HTTP $(status_of "$res")): $(body_of "$res")"
  fi
done
echo

echo "=== Test 3: Verify VMs Running ==="
res=$(api GET "/vms?workshop_id=${WORKSHOP_ID}")
running=$(body_of "$res" | jq '[.vms[] | select(.status == "running")] | length' 2>/dev/null || echo 0)
if [ "$(status_of "$res")" = "200" ] && [ "$running" = "$SEATS" ]; then
  pass "All ${SEATS} VMs are listed as running"
else
  fail "Expected ${SEATS} running VMs, found ${running:-0}: $(body_of "$res" | head -c 300)"
fi
echo

echo "=== Test 4: Ping MicroVMs ==="
for seat in $(seq 1 "$SEATS"); do
  ip=${IPS[$seat]:-}
  if [ -z "$ip" ]; then fail "Ping seat ${seat}: VM was not created"; continue; fi
  deadline=$((SECONDS + TIMEOUT))
  until ping -c 1 -W 1 "$ip" >/dev/null 2>&1 || [ "$SECONDS" -ge "$deadline" ]; do sleep 1; done
  if ping -c 3 -i 0.3 -W 2 "$ip" >/dev/null 2>&1; then pass "Ping seat ${seat} (${ip}) succeeded"; else fail "Ping seat ${seat} (${ip}) got no answer within ${TIMEOUT}s"; fi
done
echo

echo "=== Test 5: Proxy Health ==="
for seat in $(seq 1 "$SEATS"); do
  if [ -z "${IPS[$seat]:-}" ]; then fail "Proxy health seat ${seat}: VM was not created"; continue; fi
  deadline=$((SECONDS + TIMEOUT))
  while :; do
    res=$(api GET "/proxy/${WORKSHOP_ID}/${seat}/health")
    health=$(body_of "$res" | jq -r '.status' 2>/dev/null)
    [ "$health" = "healthy" ] || [ "$SECONDS" -ge "$deadline" ] && break
    sleep 1
  done
  if [ "$(status_of "$res")" = "200" ] && [ "$health" = "healthy" ]; then
    pass "Proxy health seat ${seat}: terminal and files services are up"
  else
    fail "Proxy health seat ${seat}: $(body_of "$res")"
  fi
done
echo

echo "=== Test 6: VM Details ==="
for seat in $(seq 1 "$SEATS"); do
  if [ -z "${IPS[$seat]:-}" ]; then fail "Details seat ${seat}: VM was not created"; continue; fi
  res=$(api GET "/vms/${WORKSHOP_ID}/${seat}")
  got_ip=$(body_of "$res" | jq -r '.ip' 2>/dev/null)
  if [ "$(status_of "$res")" = "200" ] && [ "$got_ip" = "${IPS[$seat]}" ]; then
    pass "VM seat ${seat} details match (IP ${got_ip}, status $(body_of "$res" | jq -r '.status'))"
  else
    fail "VM seat ${seat} details: $(body_of "$res")"
  fi
done

cleanup
echo
line
echo "Test Summary"
line
echo "Passed: ${PASSED}"
echo "Failed: ${FAILED}"
echo
if [ "$FAILED" -eq 0 ]; then
  echo "All tests passed!"
  exit 0
fi
echo "Tests failed!"
exit 1
