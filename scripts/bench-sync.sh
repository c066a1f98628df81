#!/usr/bin/env bash
# Scripted runs of `salesync sync --once` on fresh `salesync emulate` instances (issue #12), each
# scenario with its baseline leg in the same run, end to end into SQLite:
#
#   scripts/bench-sync.sh rest        # REST sweep at the real limits with API latency:
#                                     #   reads-1 (one chunk in flight) vs reads-4 (the default)
#   scripts/bench-sync.sh busy        # clean instance vs one call in seven answered 606
#   scripts/bench-sync.sh cotenant    # told the free share (RATE_CALLS=50) vs not told, next to a
#                                     #   co-tenant making 50 of the 100 calls / 20 s
#   scripts/bench-sync.sh bulk        # bulk path at realistic export processing time
#   scripts/bench-sync.sh incremental # `salesync sync` running; CHANGES people changed in Marketo
#                                     #   (REST sync leads): time until all of them are in the
#                                     #   mirror, on a clean and on a busy (1 in 7 → 606) instance
#   scripts/bench-sync.sh quiet       # issue #13: a second `salesync sync --once` on the same
#                                     #   store with nothing changed: its Marketo and Salesforce
#                                     #   calls and time
#   scripts/bench-sync.sh sf-incremental  # issue #13: `salesync sync` running; SF_CHANGES
#                                     #   mirrored contacts without an opportunity get a new open
#                                     #   Opportunity + primary contact role in Salesforce only
#                                     #   (REST sObject create): time until all are mirrored
#   scripts/bench-sync.sh reconcile   # issue #13: after the initial sync, one pass that runs the
#                                     #   drift repair (SALESYNC_RECONCILE_EVERY_SECS=1): calls,
#                                     #   time and what it found
#   scripts/bench-sync.sh rebuild     # issue #13: after the initial sync, `salesync rebuild`
#                                     #   (shadow copy, compare, swap): calls, time, peak RSS
#   PEOPLE=20000 scripts/bench-sync.sh busy cotenant    # several, smaller
#
# Environment:
#   PEOPLE (per scenario: rest 100000, busy 20000, cotenant 20000, bulk 1000000,
#           incremental 20000, quiet/sf-incremental/reconcile/rebuild 100000)  SEED (1)
#   CHANGES (1000)  POLL_SECS (10)   incremental: people changed, `salesync sync` poll interval
#   SF_CHANGES (200)                 sf-incremental: contacts given an opportunity (POLL_SECS too)
#   ROUNDS (1)                       incremental, sf-incremental: rounds of changes on one running
#                                    `salesync sync`, each after a random 0–POLL_SECS s wait
#   LATENCY_MS (300)   Marketo and Salesforce latency of every call (all scenarios but bulk)
#   BULK_MS_PER_1000_ROWS (200)  bulk export processing time per 1,000 rows (bulk scenario)
#   SKIP_BUILD (0)  1: use the existing target/release/salesync (SALESYNC_BIN overrides the path)
#   BENCH_WORK      work dir (default: a new mktemp dir, kept and printed)
# Prints one table per scenario: wall time of the process, the engine's own pass time (sync s:
# without process start and the delivery pass, which provisions the custom activity types on a
# fresh instance), people mirrored, people/s and Marketo calls per second (both of wall time),
# peak RSS of the sync process and the client's final Marketo share (its 606/615 count).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SEED=${SEED:-1}
LATENCY_MS=${LATENCY_MS:-300}
BULK_MS_PER_1000_ROWS=${BULK_MS_PER_1000_ROWS:-200}
SKIP_BUILD=${SKIP_BUILD:-0}
SALESYNC_BIN=${SALESYNC_BIN:-$ROOT/target/release/salesync}
EMULATE_TIMEOUT=${EMULATE_TIMEOUT:-600}
PYTHON=${PYTHON:-$(command -v python3)}
CHANGES=${CHANGES:-1000}
SF_CHANGES=${SF_CHANGES:-200}
ROUNDS=${ROUNDS:-1}
MKTO_WINDOW_SECS=21 # the Marketo rate window (20 s) and a second
POLL_SECS=${POLL_SECS:-10}
SCENARIOS=${*:-rest busy cotenant}

die() { echo "bench-sync: $*" >&2; exit 1; }
log() { echo "bench-sync: $*" >&2; }
[[ -x /usr/bin/time ]] || die "/usr/bin/time (GNU time) is needed: apt-get install time"

WORK=${BENCH_WORK:-$(mktemp -d -t salesync-bench-sync.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
trap 'stop_sync; stop_emulator' EXIT
trap 'exit 130' INT TERM

build_cli

# leg LABEL "EMULATE ARGS" [VAR=VALUE...]: a fresh emulator, one sync, the emulator stopped.
leg() {
    local label=$1 args=$2
    shift 2
    # shellcheck disable=SC2086
    start_emulator "$label" $args
    run_salesync "$label" "$@"
    stop_emulator
}

table() { # table TITLE BASELINE LABEL...
    local title=$1 base=$2
    shift 2
    echo
    echo "$title"
    printf '  %-12s %8s %8s %9s %9s %14s %8s %8s  %s\n' leg "wall s" "sync s" people "people/s" "Marketo/s" "RSS MB" "×$base" "Marketo share at the end"
    for l in "$@"; do
        local mk=${CALLS[$l]%% *}
        printf '  %-12s %8s %8s %9s %9s %14s %8s %8s  %s\n' "$l" "${WALL[$l]}" "${SYNC_S[$l]}" "${RECORDS[$l]}" \
            "$(awk -v n="${RECORDS[$l]}" -v w="${WALL[$l]}" 'BEGIN { printf "%.0f", n / w }')" \
            "$(awk -v n="$mk" -v w="${WALL[$l]}" 'BEGIN { printf "%.2f (%d)", n / w, n }')" \
            "${RSS[$l]}" "$(awk -v a="${WALL[$l]}" -v b="${WALL[$base]}" 'BEGIN { printf "%.2f", a / b }')" \
            "${SHARE[$l]:--}"
    done
}

# calls_table TITLE LABEL...: per leg its wall and pass time, people in the mirror, Marketo and
# Salesforce calls of the pass (the engine's count; in brackets the emulator's count of the whole
# run, delivery pass included), peak RSS, and what the pass reported besides.
calls_table() {
    local title=$1
    shift
    echo
    echo "$title"
    printf '  %-18s %8s %8s %9s %12s %12s %7s  %s\n' leg "wall s" "sync s" people "Marketo" "Salesforce" "RSS MB" notes
    for l in "$@"; do
        local notes=${VIA[$l]:+; initial sync via ${VIA[$l]}}
        notes+=${RECONCILED[$l]:+; reconciled: ${RECONCILED[$l]}}
        notes+=${REBUILT[$l]:+; rebuild: ${REBUILT[$l]}}
        notes=${notes#; }
        printf '  %-18s %8s %8s %9s %12s %12s %7s  %s\n' "$l" "${WALL[$l]}" "${SYNC_S[$l]}" "${RECORDS[$l]}" \
            "${MK_CALLS[$l]} (${WIRE_MK[$l]})" "${SF_CALLS[$l]} (${WIRE_SF[$l]})" "${RSS[$l]}" "${notes:--}"
    done
}

# two_passes LABEL "EMULATE ARGS" [RUN_SALESYNC OPTION...] [-- VAR=VALUE...]: a fresh emulator,
# the initial sync (leg LABEL-initial), then a second run on the same store (leg LABEL) with the
# options and environment given, the emulator stopped.
two_passes() {
    local label=$1 args=$2 opts=()
    shift 2
    while (($#)) && [[ $1 != -- ]]; do opts+=("$1"); shift; done
    (($#)) && shift
    # shellcheck disable=SC2086
    start_emulator "$label" $args
    run_salesync "$label-initial"
    # A new process does not know the calls its predecessor made in the rate window (README):
    # let the window pass, so the second run starts at the instance's full share as in production.
    sleep "$MKTO_WINDOW_SECS"
    run_salesync --store "$label-initial" "${opts[@]}" "$label" "$@"
    stop_emulator
}

declare -A REACH
# incremental_leg LABEL "EMULATE ARGS" [marketo|salesforce] [N]: `salesync sync` running on a
# fresh emulator; once its initial sync is done, N people (default CHANGES) are changed in
# Marketo (a new title) or in Salesforce (a new opportunity; see change_and_wait), ROUNDS times;
# REACH[LABEL] is the seconds from the last change made to all of them mirrored, one figure a
# round. With one round the changes start right after the first pass ends, so the figure
# depends on how long making them takes; more rounds each wait a random 0–POLL_SECS s first
# (seeded by SEED), so their changes land at different points of the poll cycle.
incremental_leg() {
    local label=$1 args=$2 source=${3:-marketo} n=${4:-$CHANGES} r reach
    # shellcheck disable=SC2086
    start_emulator "$label" $args
    start_sync "$label" SALESYNC_POLL_INTERVAL_SECS="$POLL_SECS"
    log "$label: initial sync done; changing $n people in $source, $ROUNDS round(s)"
    REACH[$label]=
    RANDOM=$SEED
    for ((r = 1; r <= ROUNDS; r++)); do
        ((ROUNDS == 1)) || sleep "$((RANDOM % POLL_SECS)).$((RANDOM % 10))"
        reach=$(change_and_wait "$source" "$WORK/$label/salesync.db" "$n")
        log "$label: round $r: $n changes mirrored $reach s after the last was made (poll interval $POLL_SECS s)"
        REACH[$label]+="${REACH[$label]:+ }$reach"
    done
    stop_sync
    stop_emulator
}

reach_summary() { # reach_summary "S1 S2 ...": one figure as is; several as min–max, median, all
    [[ $1 == *' '* ]] || { echo "$1 s"; return; }
    tr ' ' '\n' <<<"$1" | sort -n | awk '{ v[NR] = $1 } END {
        m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%s–%s s, median %.1f s over %d rounds", v[1], v[NR], m, NR }'
    echo " (${1// /, })"
}

log "work dir $WORK; machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
lat="--latency-ms $LATENCY_MS"
for s in $SCENARIOS; do
    case $s in
        rest)
            PEOPLE=${PEOPLE_REST:-${PEOPLE:-100000}}
            leg reads-1 "$lat" SALESYNC_INITIAL_MODE=rest SALESYNC_REST_READS_IN_FLIGHT=1
            leg reads-4 "$lat" SALESYNC_INITIAL_MODE=rest SALESYNC_REST_READS_IN_FLIGHT=4
            table "REST sweep, $PEOPLE people, real limits, ${LATENCY_MS} ms per call" reads-1 reads-1 reads-4
            ;;
        busy)
            PEOPLE=${PEOPLE_BUSY:-${PEOPLE:-20000}}
            leg clean "$lat"
            leg busy-1in7 "$lat --busy-606 0.142857"
            table "busy instance, $PEOPLE people, real limits, ${LATENCY_MS} ms per call" clean clean busy-1in7
            ;;
        cotenant)
            PEOPLE=${PEOPLE_COTENANT:-${PEOPLE:-20000}}
            leg told-50 "$lat --co-tenant-calls 50" SALESYNC_MARKETO_RATE_CALLS=50
            leg not-told "$lat --co-tenant-calls 50"
            table "co-tenant making 50 of 100 calls / 20 s, $PEOPLE people, ${LATENCY_MS} ms per call" told-50 told-50 not-told
            ;;
        bulk)
            PEOPLE=${PEOPLE_BULK:-${PEOPLE:-1000000}}
            leg bulk "--bulk-ms-per-1000-rows $BULK_MS_PER_1000_ROWS" SALESYNC_INITIAL_MODE=bulk
            table "bulk path, $PEOPLE people, real limits, export processing ${BULK_MS_PER_1000_ROWS} ms per 1,000 rows" bulk bulk
            ;;
        incremental)
            PEOPLE=${PEOPLE_INCREMENTAL:-${PEOPLE:-20000}}
            incremental_leg inc-clean "$lat"
            incremental_leg inc-busy "$lat --busy-606 0.142857"
            echo
            echo "incremental, $CHANGES of $PEOPLE people changed in Marketo, poll interval $POLL_SECS s, ${LATENCY_MS} ms per call"
            printf '  %-12s %s\n' inc-clean "$(reach_summary "${REACH[inc-clean]}") from the last change to all mirrored"
            printf '  %-12s %s\n' inc-busy "$(reach_summary "${REACH[inc-busy]}") (one call in seven answered 606)"
            ;;
        quiet)
            PEOPLE=${PEOPLE_QUIET:-${PEOPLE:-100000}}
            two_passes quiet "$lat"
            calls_table "quiet incremental pass (nothing changed), $PEOPLE people, real limits, ${LATENCY_MS} ms per call" \
                quiet-initial quiet
            ;;
        sf-incremental)
            PEOPLE=${PEOPLE_SF_INCREMENTAL:-${PEOPLE:-100000}}
            incremental_leg sf-inc "$lat" salesforce "$SF_CHANGES"
            echo
            echo "Salesforce-only changes: $SF_CHANGES of $PEOPLE people (contacts) given a new opportunity, poll interval $POLL_SECS s, ${LATENCY_MS} ms per call"
            printf '  %-12s %s\n' sf-inc "$(reach_summary "${REACH[sf-inc]}") from the last change to all mirrored"
            ;;
        reconcile)
            PEOPLE=${PEOPLE_RECONCILE:-${PEOPLE:-100000}}
            two_passes reconcile "$lat" -- SALESYNC_RECONCILE_EVERY_SECS=1
            [[ -n ${RECONCILED[reconcile]} ]] || die "the reconcile pass did not reconcile"
            calls_table "drift repair (a reconciling pass after the initial sync), $PEOPLE people, real limits, ${LATENCY_MS} ms per call" \
                reconcile-initial reconcile
            ;;
        rebuild)
            PEOPLE=${PEOPLE_REBUILD:-${PEOPLE:-100000}}
            two_passes rebuild "$lat" --rebuild
            [[ ${REBUILT[rebuild]} == done* ]] || die "salesync rebuild did not finish"
            calls_table "salesync rebuild after the initial sync, $PEOPLE people, real limits, ${LATENCY_MS} ms per call" \
                rebuild-initial rebuild
            ;;
        *) die "unknown scenario $s (rest, busy, cotenant, bulk, incremental, quiet, sf-incremental, reconcile, rebuild)" ;;
    esac
done
echo
echo "salesync $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at end; logs in $WORK"
