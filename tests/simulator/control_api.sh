#!/bin/sh
# The simulator's control API driven from a shell, as a CI job or a non-Python rig would: POSIX sh,
# curl and the sim command only.  Run by tests/simulator/test_control_api_shell.py; by hand:
#
#   sh tests/simulator/control_api.sh            # uses infusion-gateway from PATH
#   SIM="python3 -m gateway" sh tests/simulator/control_api.sh
#
# Exits 0 when every check passed; otherwise prints the failed check and exits 1.
set -eu

SIM=${SIM:-infusion-gateway}
work=$(mktemp -d)
sim_pid=""
cleanup() {
    if [ -n "$sim_pid" ]; then kill -TERM "$sim_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# expect WHAT TEXT PATTERN: TEXT must contain PATTERN (a fixed string).
expect() {
    case $2 in
        *"$3"*) echo "ok: $1" ;;
        *) fail "$1: expected $3 in: $2" ;;
    esac
}

$SIM token new "$work/token" >/dev/null
TOKEN=$(cat "$work/token")

# The first stdout line names the control API's address; read it through a FIFO, so the last
# line can be read from the same stream once the simulator stops.
mkfifo "$work/out"
$SIM sim --protocol modbus --listen tcp://127.0.0.1:0 --pumps 2 --time-scale 60 \
    --control tcp://127.0.0.1:0 --control-token-file "$work/token" >"$work/out" &
sim_pid=$!
exec 3<"$work/out"
IFS= read -r first <&3 || fail "the simulator printed no first line"
control=$(printf '%s\n' "$first" | sed -n 's/.*"control": "tcp:\/\/\([^"]*\)".*/\1/p')
[ -n "$control" ] || fail "no control address in: $first"
API="http://$control"

call() { # call METHOD PATH [JSON]: the response body, then the HTTP status on its own line
    if [ $# -ge 3 ]; then
        curl -sS --max-time 10 -X "$1" -H "Authorization: Bearer $TOKEN" \
            -H "Content-Type: application/json" -d "$3" -w '\n%{http_code}' "$API$2"
    else
        curl -sS --max-time 10 -X "$1" -H "Authorization: Bearer $TOKEN" \
            -w '\n%{http_code}' "$API$2"
    fi
}

expect "two pumps listed" "$(call GET /v1/pumps)" '"control_path":"/v1/pumps/2"'
expect "the truth of pump 1" "$(call GET /v1/pumps/1)" '"state":"stopped"'
expect "inject an occlusion" "$(call POST /v1/pumps/1/faults '{"fault": "occlusion"}')" \
    '"done":"occlusion inject"'
truth=$(call GET /v1/pumps/1)
expect "pump 1 alarms" "$truth" '"alarms":["occlusion"]'
expect "pump 1 shows the fault" "$truth" '"faults":[{"fault":"occlusion","value":null}]'
expect "pump 2 untouched" "$(call GET /v1/pumps/2)" '"alarms":[],'
expect "events as SSE" "$(call GET '/v1/pumps/1/events?follow=false')" 'event: alarm'
expect "schedule a fault" \
    "$(call POST /v1/pumps/2/faults '{"fault": "slow", "value": 0.5, "at_s": 86400}')" \
    '"at_s":86400.0'
expect "clear one fault" "$(call DELETE /v1/pumps/1/faults/occlusion)" '"done":"occlusion clear"'
expect "clear all faults" "$(call DELETE /v1/pumps/2/faults)" '"done":"all faults cleared"'
expect "nothing scheduled" "$(call GET /v1/pumps/2)" '"scheduled":[]'
expect "refill" "$(call POST /v1/pumps/1/refill '{"volume_ml": 250}')" 'refilled to 250 mL'
expect "reservoir" "$(call GET /v1/pumps/1)" '"reservoir_remaining_ml":250.0'
expect "reset" "$(call POST /v1/pumps/1/reset)" '"done":"reset to power-on state"'
expect "reset cleared the alarm" "$(call GET /v1/pumps/1)" '"alarms":[],'
expect "time scale" "$(call PUT /v1/clock '{"time_scale": 600}')" '"time_scale":600.0'
expect "bad value named" "$(call POST /v1/pumps/1/faults '{"fault": "garbage", "value": 3}')" \
    "'garbage' value must be within 0..1"
expect "bad value is 422" "$(call POST /v1/pumps/1/faults '{"fault": "garbage", "value": 3}')" \
    "
422"
expect "no token is 401" \
    "$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "$API/v1/pumps")" "401"
expect "schema behind the token" "$(call GET /openapi.json)" '"/v1/pumps/{n}/faults"'

kill -TERM "$sim_pid"
last=$(cat <&3 | tail -n 1)
wait "$sim_pid" || fail "the simulator exited with $?"
sim_pid=""
expect "last line" "$last" '"lifetime_volume_infused_ml": 0.0'
echo "all checks passed"
