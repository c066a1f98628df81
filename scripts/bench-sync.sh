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
#   PEOPLE=20000 scripts/bench-sync.sh busy cotenant    # several, smaller
#
# Environment:
#   PEOPLE (per scenario: rest 100000, busy 20000, cotenant 20000, bulk 1000000,
#           incremental 20000)  SEED (1)
#   CHANGES (1000)  POLL_SECS (10)   incremental: people changed, `salesync sync` poll interval
#   LATENCY_MS (300)   Marketo and Salesforce latency of every call in the rest/busy/cotenant runs
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
trap stop_emulator EXIT
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

declare -A REACH
# incremental_leg LABEL "EMULATE ARGS": `salesync sync` running on a fresh emulator; once its
# initial sync is done, CHANGES qualified people get a new title through Marketo's REST sync
# leads call; REACH[LABEL] is the seconds from the last change made to all of them mirrored.
incremental_leg() {
    local label=$1 args=$2
    # shellcheck disable=SC2086
    start_emulator "$label" $args
    local dir=$WORK/$label
    rm -rf "$dir"
    mkdir -p "$dir"
    (
        cd "$dir"
        export SALESYNC_MARKETO_URL=$MKTO_URL SALESYNC_MARKETO_CLIENT_ID=$MKTO_ID \
            SALESYNC_MARKETO_CLIENT_SECRET=$MKTO_SECRET SALESYNC_SALESFORCE_URL=$SF_URL \
            SALESYNC_SALESFORCE_CLIENT_ID=$SF_ID SALESYNC_SALESFORCE_CLIENT_SECRET=$SF_SECRET \
            SALESYNC_STORE=sqlite://salesync.db SALESYNC_POLL_INTERVAL_SECS=$POLL_SECS
        exec "$SALESYNC_BIN" sync >"$WORK/$label.out" 2>"$WORK/$label.log"
    ) &
    local sync_pid=$!
    local deadline=$((SECONDS + 3600))
    until grep -q 'phase: Idle' "$WORK/$label.log" 2>/dev/null; do
        kill -0 "$sync_pid" 2>/dev/null || { tail -20 "$WORK/$label.log" >&2; die "salesync sync ($label) exited"; }
        ((SECONDS < deadline)) || die "initial sync ($label) not done after an hour"
        sleep 0.5
    done
    log "$label: initial sync done; changing $CHANGES people in Marketo"
    REACH[$label]=$("$PYTHON" - "$dir/salesync.db" "$MKTO_URL" "$MKTO_ID" "$MKTO_SECRET" "$CHANGES" <<'EOF'
import json, sqlite3, sys, time, urllib.parse, urllib.request
db, url, cid, secret, n = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3], sys.argv[4], int(sys.argv[5])
con = sqlite3.connect(db)
ids = [r[0] for r in con.execute("select marketo_id from people order by marketo_id limit ?", (n,))]
assert len(ids) == n, f"only {len(ids)} people in the mirror"
q = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": cid, "client_secret": secret})
token = json.load(urllib.request.urlopen(f"{url}/identity/oauth/token?{q}"))["access_token"]
title = f"bench {time.time():.0f}"
for i in range(0, n, 300):
    body = json.dumps({"action": "updateOnly", "lookupField": "id",
                       "input": [{"id": x, "title": title} for x in ids[i:i + 300]]}).encode()
    for _ in range(100):  # 606/615 from a busy instance: the call did nothing, send it again
        req = urllib.request.Request(f"{url}/rest/v1/leads.json", body, method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        answer = json.load(urllib.request.urlopen(req))
        if answer.get("success"):
            break
        assert answer["errors"][0]["code"] in ("606", "615"), answer
        time.sleep(0.5)
    else:
        sys.exit("the change call kept failing")
    bad = [r for r in answer["result"] if r.get("status") != "updated"]
    assert not bad, bad[:3]
t0 = time.monotonic()
marks = ",".join("?" * len(ids))
while time.monotonic() - t0 < 600:
    done = con.execute(f"select count(*) from people where title = ? and marketo_id in ({marks})", [title, *ids]).fetchone()[0]
    if done == n:
        print(f"{time.monotonic() - t0:.1f}")
        break
    time.sleep(0.2)
else:
    sys.exit(f"only {done} of {n} changes mirrored after 600 s")
EOF
)
    kill -TERM "$sync_pid" 2>/dev/null || true
    wait "$sync_pid" 2>/dev/null || true
    stop_emulator
    log "$label: $CHANGES changes mirrored ${REACH[$label]} s after the last was made (poll interval $POLL_SECS s)"
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
            printf '  %-12s %s\n' inc-clean "${REACH[inc-clean]} s from the last change to all mirrored"
            printf '  %-12s %s\n' inc-busy "${REACH[inc-busy]} s (one call in seven answered 606)"
            ;;
        *) die "unknown scenario $s (rest, busy, cotenant, bulk, incremental)" ;;
    esac
done
echo
echo "salesync $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at end; logs in $WORK"
