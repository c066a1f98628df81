# Shared by the bench scripts (sourced, not run): start/stop a `salesync emulate` instance, run
# `salesync sync --once` against it under GNU time, and read the figures back.
#
# The sourcing script sets ROOT, PEOPLE, SEED, WORK, PYTHON, SALESYNC_BIN, EMULATE_TIMEOUT and
# defines die/log; results land in the associative arrays WALL RSS RECORDS QUALIFIED CALLS SHARE
# SYNC_S (the engine's own pass time, without process start and the delivery pass) keyed by leg
# label.

declare -A WALL RSS RECORDS QUALIFIED CALLS SHARE SYNC_S

# build_cli: the release CLI unless SKIP_BUILD=1; SALESYNC_BIN must then exist.
build_cli() {
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        log "building the release CLI (cargo build --release -p salesync-cli --all-features)"
        (cd "$ROOT" && cargo build --release -p salesync-cli --all-features) >&2
    fi
    [[ -x $SALESYNC_BIN ]] || die "$SALESYNC_BIN missing (build it, or set SALESYNC_BIN)"
}

EMU_PID=
stop_emulator() {
    [[ -n $EMU_PID ]] || return 0
    if kill -0 "$EMU_PID" 2>/dev/null; then
        kill -INT "$EMU_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$EMU_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$EMU_PID" 2>/dev/null && kill -KILL "$EMU_PID" 2>/dev/null
    fi
    wait "$EMU_PID" 2>/dev/null || true
    EMU_PID=
}

# start_emulator LABEL [ARGS...]: a fresh emulator with --people/--seed and ARGS; sets MKTO_URL
# MKTO_ID MKTO_SECRET SF_URL SF_ID SF_SECRET and waits until both listen.
start_emulator() {
    local label=$1
    shift
    local out=$WORK/emulate-$label.json err=$WORK/emulate-$label.log
    local deadline=$((SECONDS + EMULATE_TIMEOUT))
    "$SALESYNC_BIN" emulate --people "$PEOPLE" --seed "$SEED" "$@" >"$out" 2>"$err" &
    EMU_PID=$!
    until grep -q '"marketo_url"' "$out" 2>/dev/null; do
        kill -0 "$EMU_PID" 2>/dev/null || { cat "$err" >&2; die "emulator ($label) exited"; }
        ((SECONDS < deadline)) || die "emulator ($label) not ready after ${EMULATE_TIMEOUT}s"
        sleep 0.2
    done
    eval "$("$PYTHON" - "$out" <<'EOF'
import json, shlex, socket, sys, time, urllib.parse
d = json.loads(next(l for l in open(sys.argv[1]) if "marketo_url" in l))
names = {"MKTO_URL": "marketo_url", "MKTO_ID": "marketo_client_id", "MKTO_SECRET": "marketo_client_secret",
         "SF_URL": "salesforce_url", "SF_ID": "salesforce_client_id", "SF_SECRET": "salesforce_client_secret"}
for var, key in names.items():
    print("{}={}".format(var, shlex.quote(str(d[key]))))
for key in ("marketo_url", "salesforce_url"):  # both listening
    u = urllib.parse.urlsplit(d[key])
    for _ in range(100):
        try:
            socket.create_connection((u.hostname, u.port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit("{} not accepting connections".format(d[key]))
EOF
)"
    log "emulator ($label): $PEOPLE people, seed $SEED${*:+, $*}"
}

wall_of() { # seconds from a `time -v` report
    awk -F': ' '/Elapsed \(wall clock\)/ {
        n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.1f", s }' "$1"
}
rss_of() { # peak RSS in MB from a `time -v` report
    awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$1"
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
sqlite_count() { # sqlite_count FILE SQL
    "$PYTHON" -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])' "$1" "$2"
}

# run_salesync LABEL [VAR=VALUE...]: `salesync sync --once` against the running emulator into a
# fresh SQLite store, with the extra environment given; fills the result arrays for LABEL.
run_salesync() {
    local label=$1
    shift
    local dir=$WORK/$label
    rm -rf "$dir"
    mkdir -p "$dir"
    log "salesync sync --once ($label${*:+: $*}) → $dir/salesync.db"
    set +e
    (
        cd "$dir"
        export SALESYNC_MARKETO_URL=$MKTO_URL SALESYNC_MARKETO_CLIENT_ID=$MKTO_ID \
            SALESYNC_MARKETO_CLIENT_SECRET=$MKTO_SECRET SALESYNC_SALESFORCE_URL=$SF_URL \
            SALESYNC_SALESFORCE_CLIENT_ID=$SF_ID SALESYNC_SALESFORCE_CLIENT_SECRET=$SF_SECRET \
            SALESYNC_STORE=sqlite://salesync.db
        for kv in "$@"; do export "${kv?}"; done
        /usr/bin/time -v -o "$WORK/$label.time" "$SALESYNC_BIN" sync --once \
            >"$WORK/$label.out" 2>"$WORK/$label.log"
    )
    local st=$?
    set -e
    ((st == 0)) || { tail -30 "$WORK/$label.log" "$WORK/$label.out" >&2; die "salesync sync ($label) failed (exit $st)"; }
    WALL[$label]=$(wall_of "$WORK/$label.time")
    RSS[$label]=$(rss_of "$WORK/$label.time")
    RECORDS[$label]=$(sqlite_count "$dir/salesync.db" 'select count(*) from people')
    QUALIFIED[$label]=${RECORDS[$label]}
    CALLS[$label]=$(sed -nE 's/.* ([0-9]+) Marketo \+ ([0-9]+) Salesforce calls.*/\1 + \2 SF/p' "$WORK/$label.out")
    SYNC_S[$label]=$(sed -nE 's/.* Salesforce calls in ([0-9.]+)s.*/\1/p' "$WORK/$label.out")
    SHARE[$label]=$(sed -nE 's/^  Marketo share: (.*)$/\1/p' "$WORK/$label.out")
    sed 's/^/  /' "$WORK/$label.out" >&2
}
