#!/bin/sh
# A course driven by `infusion-gateway run` against `infusion-gateway sim`, while a rig written in
# POSIX sh and curl (no Python) reaches into the simulated pump through its control API: it
# injects an occlusion and a link drop, acknowledges the gateway's alarms over the gateway's API,
# reads the pump's truth (nothing delivered beyond the prescription), resets the pump and starts
# again.  The shell twin of tests/simulator/test_control_api_course.py, shortened to the first
# hours of day 1; run by tests/simulator/test_control_api_course_shell.py.  By hand:
#
#   sh tests/simulator/control_api_course.sh          # uses infusion-gateway from PATH
#   GATEWAY="python3 -m gateway" sh tests/simulator/control_api_course.sh
#
# SIM (the simulator's command) defaults to GATEWAY.  Real processes on real (scaled) time: every
# wait polls with a deadline.  Exits 0 when every check passed; otherwise prints the failed check
# and the gateway's last log lines and exits 1.  Both processes are stopped on every exit path.
set -eu

GATEWAY=${GATEWAY:-infusion-gateway}
SIM=${SIM:-$GATEWAY}
# A 24-h day in 36 real seconds (the gateway allows 2550 at most); both sides run at this scale.
TIME_SCALE=2400
# Deadlines, real seconds: a start is a Python import; a lost link is seen after a driver timeout.
START_S=30
EFFECT_S=20

work=$(mktemp -d)
sim_pid=""
gateway_pid=""

# stop PID: SIGTERM, then SIGKILL if it is still there after 10 s; reaps it either way.
stop() {
    kill -TERM "$1" 2>/dev/null || return 0
    n=0
    while kill -0 "$1" 2>/dev/null && [ "$n" -lt 50 ]; do
        nap
        n=$((n + 1))
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cleanup() {
    if [ -n "$gateway_pid" ]; then stop "$gateway_pid"; fi
    if [ -n "$sim_pid" ]; then stop "$sim_pid"; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

nap() { sleep 0.2 2>/dev/null || sleep 1; } # a poll interval; integer sleep where 0.2 is refused

fail() {
    echo "FAIL: $*" >&2
    if [ -s "$work/gateway.log" ]; then
        echo "--- the gateway's last log lines:" >&2
        grep -v '"event": "readback"' "$work/gateway.log" | tail -n 20 >&2
    fi
    exit 1
}

# expect WHAT TEXT PATTERN: TEXT must contain PATTERN (a fixed string).
expect() {
    case $2 in
        *"$3"*) echo "ok: $1" ;;
        *) fail "$1: expected $3 in: $2" ;;
    esac
}

# equal WHAT GOT WANTED: GOT must be exactly WANTED.
equal() {
    [ "$2" = "$3" ] || fail "$1: expected $3, got $2"
    echo "ok: $1"
}

# until_true WHAT SECONDS COMMAND...: run COMMAND until it succeeds, for at most SECONDS.
until_true() {
    what=$1
    deadline=$(($(date +%s) + $2))
    shift 2
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "timed out waiting for $what"
        nap
    done
    echo "ok: $what"
}

# first NAME JSON: the value of the first "NAME": in JSON (compact, as the APIs send it).
first() {
    printf '%s\n' "$2" | grep -o "\"$1\":[^,}]*" | head -n 1 | cut -d: -f2- | tr -d '"'
}

# sum NAME JSON: the sum of every numeric "NAME": in JSON.
sum() {
    printf '%s\n' "$2" | grep -o "\"$1\":[-0-9.e+]*" | cut -d: -f2 |
        awk '{ s += $1 } END { print s + 0 }'
}

# string NAME LINE: the string "NAME": "..." in a process's first stdout line (spaced JSON).
string() { printf '%s\n' "$2" | sed -n "s/.*\"$1\": \"\([^\"]*\)\".*/\1/p"; }

# holds AWK-CONDITION: true when the condition on numbers holds (sh has no floating point).
holds() { awk "BEGIN { exit !($1) }"; }

# call BASE TOKEN METHOD PATH [JSON]: the response body; a refusal (not 2xx) is also told on stderr
# and makes the call fail.
call() {
    if [ $# -ge 5 ]; then
        out=$(curl -sS --max-time 10 -X "$3" -H "Authorization: Bearer $2" \
            -H "Content-Type: application/json" -d "$5" -w '\n%{http_code}' "$1$4") || return 1
    else
        out=$(curl -sS --max-time 10 -X "$3" -H "Authorization: Bearer $2" \
            -w '\n%{http_code}' "$1$4") || return 1
    fi
    printf '%s\n' "${out%
*}"
    case ${out##*
} in
        2??) ;;
        *) echo "refused: $3 $4: $out" >&2 && return 1 ;;
    esac
}
control() { call "$CONTROL" "$SIM_TOKEN" "$@"; }
gateway() { call "$API" "$GATEWAY_TOKEN" "$@"; }

# The rig's view: the pump's truth (control API) and the channel (gateway API).
truth() { control GET /v1/pumps/1; }
channels() { gateway GET /v1/channels; }
channel_state() { first state "$(channels)"; }
pump_state() { first state "$(truth)"; }

# start_gateway STATE_DIR: a flat-arm course for a 70-kg patient randomised now, its API on a free
# loopback port; sets gateway_pid and API from its first stdout line (read through a FIFO).
start_gateway() {
    rm -f "$work/gateway.out"
    mkfifo "$work/gateway.out"
    $GATEWAY run --pump "$PUMP_URL" --arm flat --weight-kg 70 \
        --randomised-at "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --state-dir "$1" \
        --api 127.0.0.1:0 --token-file "$work/gateway.token" --time-scale "$TIME_SCALE" \
        >"$work/gateway.out" 2>>"$work/gateway.log" &
    gateway_pid=$!
    exec 4<"$work/gateway.out"
    IFS= read -r line <&4 || fail "the gateway printed no first line"
    API="http://$(string api "$line")"
    [ "$API" != http:// ] || fail "no api address in: $line"
}

# stop_gateway: SIGTERM; it must exit 0.
stop_gateway() {
    kill -TERM "$gateway_pid"
    status=0
    wait "$gateway_pid" || status=$?
    gateway_pid=""
    exec 4<&-
    [ "$status" -eq 0 ] || fail "the gateway exited with $status"
}

# acknowledge_until_infusing: as a nurse would, acknowledge the gateway's alarm until the pump
# runs again.
OPERATOR='{"operator": "shell rig", "note": "checked the pump"}'
infusing_after_ack() {
    if [ "$(channel_state)" = alarm ]; then
        gateway POST /v1/channels/bed1/ack "$OPERATOR" >/dev/null
    fi
    [ "$(pump_state)" = infusing ]
}

$GATEWAY token new "$work/sim.token" >/dev/null
$GATEWAY token new "$work/gateway.token" >/dev/null
SIM_TOKEN=$(cat "$work/sim.token")
GATEWAY_TOKEN=$(cat "$work/gateway.token")

mkfifo "$work/sim.out"
$SIM sim --protocol modbus --listen tcp://127.0.0.1:0 --time-scale "$TIME_SCALE" \
    --max-rate-ml-per-h 100 --reservoir-ml 2000 \
    --control tcp://127.0.0.1:0 --control-token-file "$work/sim.token" >"$work/sim.out" &
sim_pid=$!
exec 3<"$work/sim.out"
IFS= read -r line <&3 || fail "the simulator printed no first line"
control=$(string control "$line")
PUMP_URL=$(string pump_url "$line")
case $control in
    tcp://*) CONTROL="http://${control#tcp://}" ;;
    *) fail "no control address in: $line" ;;
esac
[ -n "$PUMP_URL" ] || fail "no pump_url in: $line"

# -- the course ------------------------------------------------------------------------------
start_gateway "$work/state"
infused_5_ml() { holds "$(first volume_infused_ml "$(truth)") > 5"; }
until_true "5 mL infused" "$START_S" infused_5_ml
expect "the gateway infusing" "$(channels)" '"id":"bed1","state":"infusing"'

# An occlusion: the pump stops and alarms at once; the gateway sees it at its next poll.
expect "inject an occlusion" "$(control POST /v1/pumps/1/faults \
    '{"fault": "occlusion"}')" '"done":"occlusion inject"'
truth=$(truth)
expect "the pump stopped" "$truth" '"state":"alarm"'
expect "the pump alarms" "$truth" '"alarms":["occlusion"]'
gateway_alarm() { [ "$(channel_state)" = alarm ]; }
until_true "the gateway's alarm" "$EFFECT_S" gateway_alarm
expect "the occlusion alarm on the gateway's API" "$(channels)" '"code":"pump_occlusion"'
expect "clear the occlusion" "$(control DELETE /v1/pumps/1/faults/occlusion)" \
    '"done":"occlusion clear"'
until_true "infusing again after the acknowledgement" "$EFFECT_S" infusing_after_ack

# A link drop longer than the pump's watchdog: the pump stops itself; the gateway loses the link.
expect "inject a link drop" "$(control POST /v1/pumps/1/faults \
    '{"fault": "hang"}')" '"done":"hang inject"'
watchdog_stop() { truth | grep -q '"alarms":\[[^]]*"comm_timeout"'; }
until_true "the pump's watchdog stopping it" "$EFFECT_S" watchdog_stop
stopped_ul=$(first volume_infused_ul "$(truth)")
link_lost() { [ "$(channel_state)" = link_lost ]; }
until_true "the gateway reporting the link lost" "$EFFECT_S" link_lost
expect "the silence alarm on the gateway's API" "$(channels)" '"code":"pump_silent"'
truth=$(truth)
expect "the pump still stopped" "$truth" '"state":"alarm"'
equal "nothing infused while the link was down" "$(first volume_infused_ul "$truth")" \
    "$stopped_ul"
expect "clear the link drop" "$(control DELETE /v1/pumps/1/faults/hang)" \
    '"done":"hang clear"'
until_true "infusing again after the outage" "$EFFECT_S" infusing_after_ack

# Stop the course over the gateway's API, then hold the gateway to the truth.
expect "stop over the gateway's API" "$(gateway POST /v1/channels/bed1/stop \
    '{"operator": "shell rig", "reason": "end of the rig run"}')" '"accepted":"stop"'
both_stopped() { [ "$(channel_state)" = stopped ] && [ "$(pump_state)" = stopped ]; }
until_true "the gateway and the pump stopped" "$EFFECT_S" both_stopped
course=$(channels)
truth=$(truth)
lifetime_ml=$(first lifetime_volume_infused_ml "$truth")
prescribed_ml=$(sum prescribed_ml "$course")
delivered_ml=$(sum delivered_ml "$course")
holds "$prescribed_ml >= 350" || fail "no day prescribed: $course"
holds "$lifetime_ml <= $prescribed_ml" ||
    fail "the pump delivered $lifetime_ml mL, above the $prescribed_ml mL prescribed"
echo "ok: never above the prescription ($lifetime_ml of $prescribed_ml mL)"
# One poll at the day's rate (120 simulated s at 14.58 mL/h: 0.5 mL) is the most they may differ.
holds "$lifetime_ml - $delivered_ml <= 1 && $delivered_ml - $lifetime_ml <= 1" ||
    fail "the truth ($lifetime_ml mL) and the gateway's account ($delivered_ml mL) differ"
echo "ok: the gateway accounts what the pump delivered ($delivered_ml mL)"
stop_gateway
echo "ok: the gateway exited 0"
course_ml=$lifetime_ml

# -- reset the pump to power-on state, and start a new course on it --------------------------
expect "reset" "$(control POST /v1/pumps/1/reset)" '"done":"reset to power-on state"'
truth=$(truth)
expect "power-on: stopped" "$truth" '"state":"stopped"'
expect "power-on: no alarm" "$truth" '"alarms":[],'
expect "power-on: totalizer 0" "$truth" '"volume_infused_ul":0,'
expect "power-on: no fault" "$truth" '"faults":[],"scheduled":[]'
expect "power-on: watchdog off" "$truth" '"watchdog":{"timeout_s":0.0,"requested_s":0.0}'
expect "power-on: reservoir full" "$truth" '"reservoir_remaining_ml":2000.0,'
equal "the lifetime total kept" "$(first lifetime_volume_infused_ml "$truth")" "$lifetime_ml"

start_gateway "$work/again"
infused_1_ml() { holds "$(first volume_infused_ml "$(truth)") > 1"; }
until_true "a new course infusing on the reset pump" "$START_S" infused_1_ml
stop_gateway
not_infusing() { [ "$(pump_state)" != infusing ]; }
until_true "the pump stopped with the gateway" "$EFFECT_S" not_infusing
truth=$(truth)
lifetime_ml=$(first lifetime_volume_infused_ml "$truth")
holds "$lifetime_ml > $course_ml + 1" || fail "the new course delivered nothing: $truth"
echo "ok: the new course delivered ($lifetime_ml mL in the pump's lifetime)"

kill -TERM "$sim_pid"
last=$(cat <&3 | tail -n 1)
status=0
wait "$sim_pid" || status=$?
sim_pid=""
[ "$status" -eq 0 ] || fail "the simulator exited with $status"
final_ml=$(printf '%s\n' "$last" | sed -n 's/.*"lifetime_volume_infused_ml": \([-0-9.e+]*\).*/\1/p')
[ -n "$final_ml" ] || fail "no lifetime_volume_infused_ml in the simulator's last line: $last"
holds "$final_ml - $lifetime_ml < 0.001 && $lifetime_ml - $final_ml < 0.001" ||
    fail "the simulator's last line says $final_ml mL, its control API said $lifetime_ml mL"
echo "ok: the simulator's last line agrees with the truth"
echo "all checks passed"
