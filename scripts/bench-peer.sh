#!/usr/bin/env bash
# Side-by-side benchmark against a peer tool (issue #12): tap-marketo (the Singer tap, from PyPI)
# and salesync on the same `salesync emulate` instance, at its real limits, end to end into SQLite.
#
#   scripts/bench-peer.sh                      # 50,000 people, all three legs
#   PEOPLE=5000 scripts/bench-peer.sh          # quick check
#   EMULATE_ARGS="--flag ..." scripts/bench-peer.sh   # extra `salesync emulate` flags for every leg
#
# Legs (LEGS, default all three, in this order), each against a FRESH emulator started with the
# same --people/--seed (same data, fresh rate window, daily quota and bulk export quota):
#   tap-null     tap-marketo, `leads` stream (Bulk Lead Extract), Singer output counted and dropped
#   tap-sqlite   tap-marketo | target-sqlite (PyPI) into a fresh SQLite file: the Singer way of
#                landing the same data in SQLite
#   salesync     `salesync sync --once` into a fresh SQLite store
# A fourth, untimed emulator instance serves tap-marketo's `--discover` (the catalog).
# tap-null's count can exceed PEOPLE by a few: tap-marketo starts each 30-day window at the
# previous window's endAt and the bulk filter includes both ends, so a lead whose updatedAt is
# exactly on a boundary is emitted twice (target-sqlite upserts it by id into one row).
#
# Environment:
#   PEOPLE (50000)  SEED (1)  EMULATE_ARGS ("")  LEGS ("tap-null tap-sqlite salesync")
#   VENV_DIR (target/bench-venv)   two venvs under it, tap-marketo/ and target-sqlite/ (reused)
#   PYTHON (python3.11, else python3)   interpreter for the venvs
#   TAP_START_DATE (2024-01-01T00:00:00Z)  the emulator seeds createdAt from 2024-01-01 on
#   TAP_POLL_INTERVAL (2)  seconds between tap-marketo's export status polls; its default is 300,
#                          which on ~36 monthly windows alone would be ~3 hours. `salesync sync`
#                          polls a job it waits for after 1, 2 and 4 s, then every 5 s.
#   TARGET_BATCH_SIZE (300)  target-sqlite rows per insert batch (its default is 50; salesync
#                            applies pages of 300 rows per transaction)
#   SKIP_BUILD (0)  1: use the existing target/release/salesync (SALESYNC_BIN overrides the path)
#   BENCH_WORK      work dir for configs, logs and the SQLite files (default: a new mktemp dir,
#                   kept and printed). Nothing is written into the repository except the build and
#                   the venvs under target/.
#
# tap-marketo has no base-URL setting: it builds every URL as https://<munchkin>.mktorest.com/...
# from the Munchkin id in `endpoint`. The launcher below swaps only that base URL
# (Client.get_url) for the emulator's; everything else is the tap as published.
# target-sqlite 0.2.0 (the only Singer SQLite target on PyPI) predates Python 3.10: it pins
# SQLAlchemy 1.2.12 and uses collections.MutableMapping. Its venv gets SQLAlchemy 1.3.24 and its
# launcher aliases the collections.abc names; nothing else changes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PEOPLE=${PEOPLE:-50000}
SEED=${SEED:-1}
EMULATE_ARGS=${EMULATE_ARGS:-}
LEGS=${LEGS:-tap-null tap-sqlite salesync}
VENV_DIR=${VENV_DIR:-$ROOT/target/bench-venv}
TAP_MARKETO_VERSION=2.9.4
TARGET_SQLITE_VERSION=0.2.0
SQLALCHEMY_VERSION=1.3.24
TAP_START_DATE=${TAP_START_DATE:-2024-01-01T00:00:00Z}
TAP_POLL_INTERVAL=${TAP_POLL_INTERVAL:-2}
TARGET_BATCH_SIZE=${TARGET_BATCH_SIZE:-300}
SKIP_BUILD=${SKIP_BUILD:-0}
SALESYNC_BIN=${SALESYNC_BIN:-$ROOT/target/release/salesync}
EMULATE_TIMEOUT=${EMULATE_TIMEOUT:-300}
if [[ -z ${PYTHON:-} ]]; then
    PYTHON=$(command -v python3.11 || command -v python3)
fi

die() { echo "bench-peer: $*" >&2; exit 1; }
log() { echo "bench-peer: $*" >&2; }

[[ -x /usr/bin/time ]] || die "/usr/bin/time (GNU time) is needed: apt-get install time"
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 8)' || die "$PYTHON: Python >= 3.8 needed"

WORK=${BENCH_WORK:-$(mktemp -d -t salesync-bench-peer.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)

# shellcheck source=scripts/bench-lib.sh
source "$ROOT/scripts/bench-lib.sh"
trap stop_emulator EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------- setup
build_cli

venv() { # venv DIR SPEC... : create (or reuse) a venv and make sure SPECs are installed
    local dir=$1
    shift
    [[ -x $dir/bin/python ]] || "$PYTHON" -m venv "$dir"
    if ! "$dir/bin/python" -m pip show -q "${@%%==*}" >/dev/null 2>&1 \
        || ! "$dir/bin/python" - "$@" <<'EOF'
import sys
from importlib.metadata import version
sys.exit(any(version(n) != v for n, v in (s.split("==") for s in sys.argv[1:])))
EOF
    then
        log "installing $* into $dir"
        "$dir/bin/python" -m pip install -q --disable-pip-version-check "$@" >&2
    fi
}
TAP_VENV=$VENV_DIR/tap-marketo
TARGET_VENV=$VENV_DIR/target-sqlite
case " $LEGS " in *" tap-"*) venv "$TAP_VENV" "tap-marketo==$TAP_MARKETO_VERSION" ;; esac
case " $LEGS " in
    *" tap-sqlite "*)
        venv "$TARGET_VENV" "target-sqlite==$TARGET_SQLITE_VERSION"
        venv "$TARGET_VENV" "SQLAlchemy==$SQLALCHEMY_VERSION"
        ;;
esac

cat >"$WORK/tap-marketo-emulated.py" <<'EOF'
# tap-marketo as published, with its hard-coded https://<munchkin>.mktorest.com base swapped for
# TAP_MARKETO_BASE_URL (the emulator's); every path, parameter and header is the tap's own.
import os
import sys

import tap_marketo.client

BASE = os.environ["TAP_MARKETO_BASE_URL"].rstrip("/")
tap_marketo.client.Client.get_url = lambda self, url: "{}/{}".format(BASE, url)

import tap_marketo  # noqa: E402

sys.exit(tap_marketo.main())
EOF
cat >"$WORK/target-sqlite-py311.py" <<'EOF'
# target-sqlite 0.2.0 as published; it predates Python 3.10's removal of the collections aliases.
import collections
import collections.abc
import sys

for name in ("Mapping", "MutableMapping", "Sequence", "Iterable"):
    setattr(collections, name, getattr(collections.abc, name))

from target_sqlite import main  # noqa: E402

sys.exit(main())
EOF

# ------------------------------------------------------------------------------------- emulator
tap_calls() { # REST/bulk calls tap-marketo made (its singer http_request_duration metrics)
    grep -c '"metric": *"http_request_duration"' "$1" || true
}

write_tap_config() {
    "$PYTHON" - "$WORK/tap-config.json" "$MKTO_ID" "$MKTO_SECRET" "$TAP_START_DATE" "$TAP_POLL_INTERVAL" <<'EOF'
import json, sys
path, client_id, secret, start, poll = sys.argv[1:]
json.dump({
    # Only the Munchkin id in these is used (the launcher supplies the base URL).
    "endpoint": "https://123-ABC-456.mktorest.com/rest",
    "identity": "https://123-ABC-456.mktorest.com/identity",
    "client_id": client_id,
    "client_secret": secret,
    "start_date": start,
    "poll_interval": float(poll),
}, open(path, "w"), indent=2)
EOF
}

# The catalog goes in with --properties: tap-marketo indexes it as a dict, and singer-python turns
# a --catalog file into a Catalog object ("'Catalog' object is not subscriptable").
TAP=("$TAP_VENV/bin/python" "$WORK/tap-marketo-emulated.py" --config "$WORK/tap-config.json")
run_tap() { TAP_MARKETO_BASE_URL=$MKTO_URL "${TAP[@]}" "$@"; } # tap-marketo against the current emulator

discover() {
    start_emulator discover $EMULATE_ARGS
    write_tap_config
    run_tap --discover >"$WORK/catalog-discovered.json" 2>"$WORK/tap-discover.log" \
        || { tail -20 "$WORK/tap-discover.log" >&2; die "tap-marketo --discover failed"; }
    stop_emulator
    # The leads stream alone, every field selected.
    "$PYTHON" - "$WORK/catalog-discovered.json" "$WORK/catalog.json" <<'EOF'
import json, sys
cat = json.load(open(sys.argv[1]))
streams = [s for s in cat["streams"] if s["tap_stream_id"] == "leads"]
if not streams:
    sys.exit("no leads stream discovered")
for entry in streams[0]["metadata"]:
    entry["metadata"]["selected"] = True
json.dump({"streams": streams}, open(sys.argv[2], "w"), indent=2)
print(len(streams[0]["schema"]["properties"]), "lead fields selected", file=sys.stderr)
EOF
}

leg_tap_null() {
    start_emulator tap-null $EMULATE_ARGS
    write_tap_config
    log "tap-marketo → count ($PEOPLE people)"
    set +e
    TAP_MARKETO_BASE_URL=$MKTO_URL /usr/bin/time -v -o "$WORK/tap-null.time" "${TAP[@]}" --properties "$WORK/catalog.json" \
        2>"$WORK/tap-null.log" | grep -c '"type": *"RECORD"' >"$WORK/tap-null.count"
    local st=("${PIPESTATUS[@]}")
    set -e
    stop_emulator
    ((st[0] == 0)) || { tail -30 "$WORK/tap-null.log" >&2; die "tap-marketo failed (exit ${st[0]})"; }
    WALL[tap-null]=$(wall_of "$WORK/tap-null.time")
    RSS[tap-null]=$(rss_of "$WORK/tap-null.time")
    RECORDS[tap-null]=$(<"$WORK/tap-null.count")
    QUALIFIED[tap-null]=-
    CALLS[tap-null]=$(tap_calls "$WORK/tap-null.log")
}

leg_tap_sqlite() {
    start_emulator tap-sqlite $EMULATE_ARGS
    write_tap_config
    local db=$WORK/tap-marketo.db
    rm -f "$db"
    printf '{"database": "%s", "batch_size": %d}\n' "$db" "$TARGET_BATCH_SIZE" >"$WORK/target-config.json"
    log "tap-marketo | target-sqlite → $db"
    set +e
    local t0 t1
    t0=$(now)
    TAP_MARKETO_BASE_URL=$MKTO_URL /usr/bin/time -v -o "$WORK/tap-sqlite.time" "${TAP[@]}" --properties "$WORK/catalog.json" \
        2>"$WORK/tap-sqlite.log" \
        | /usr/bin/time -v -o "$WORK/target-sqlite.time" "$TARGET_VENV/bin/python" \
            "$WORK/target-sqlite-py311.py" -c "$WORK/target-config.json" \
            >"$WORK/target-sqlite.state" 2>"$WORK/target-sqlite.log"
    local st=("${PIPESTATUS[@]}")
    t1=$(now)
    set -e
    stop_emulator
    ((st[0] == 0)) || { tail -30 "$WORK/tap-sqlite.log" >&2; die "tap-marketo failed (exit ${st[0]})"; }
    ((st[1] == 0)) || { tail -30 "$WORK/target-sqlite.log" >&2; die "target-sqlite failed (exit ${st[1]})"; }
    WALL[tap-sqlite]=$(elapsed "$t0" "$t1")
    RSS[tap-sqlite]="$(rss_of "$WORK/tap-sqlite.time")+$(rss_of "$WORK/target-sqlite.time")"
    RECORDS[tap-sqlite]=$(sqlite_count "$db" 'select count(*) from leads')
    QUALIFIED[tap-sqlite]=$(sqlite_count "$db" \
        "select count(*) from leads where sfdc_lead_owner_id is not null and sfdc_lead_owner_id != ''")
    CALLS[tap-sqlite]=$(tap_calls "$WORK/tap-sqlite.log")
}

leg_salesync() {
    start_emulator salesync $EMULATE_ARGS
    run_salesync salesync
    stop_emulator
}

log "work dir $WORK"
log "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
case " $LEGS " in *" tap-"*) discover ;; esac
for leg in $LEGS; do
    case $leg in
        tap-null) leg_tap_null ;;
        tap-sqlite) leg_tap_sqlite ;;
        salesync) leg_salesync ;;
        *) die "unknown leg $leg (tap-null, tap-sqlite, salesync)" ;;
    esac
done

rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
echo
echo "salesync $rev vs tap-marketo $TAP_MARKETO_VERSION — $PEOPLE people (seed $SEED), salesync emulate ${EMULATE_ARGS:-(default limits)}"
echo "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at end; tap poll interval ${TAP_POLL_INTERVAL}s; logs in $WORK"
printf '%-34s %8s %9s %10s %13s %14s %16s\n' tool "wall s" records qualified "peak RSS MB" "wall/salesync" "API calls"
for leg in $LEGS; do
    case $leg in
        tap-null) name="tap-marketo (→ count, no store)" ;;
        tap-sqlite) name="tap-marketo | target-sqlite" ;;
        salesync) name="salesync sync --once (SQLite)" ;;
    esac
    ratio=-
    if [[ -n ${WALL[salesync]:-} ]]; then
        ratio=$(awk -v a="${WALL[$leg]}" -v b="${WALL[salesync]}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
    fi
    printf '%-34s %8s %9s %10s %13s %14s %16s\n' "$name" "${WALL[$leg]}" "${RECORDS[$leg]}" \
        "${QUALIFIED[$leg]}" "${RSS[$leg]}" "$ratio" "${CALLS[$leg]}"
done
echo "records: rows the tool emitted or stored; qualified: people with a sales owner (what salesync mirrors)."
