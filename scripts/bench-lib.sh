# shellcheck shell=bash disable=SC2034  # sourced; the result arrays are read by the sourcing script
# Shared by the bench scripts (sourced, not run): start/stop a `salesync emulate` instance, run
# `salesync sync --once` against it under GNU time, and read the figures back.
#
# The sourcing script sets ROOT, PEOPLE, SEED, WORK, PYTHON, SALESYNC_BIN, EMULATE_TIMEOUT and
# defines die/log; results land in the associative arrays WALL RSS RECORDS QUALIFIED CALLS SHARE
# SYNC_S (the engine's own pass time, without process start and the delivery pass) MK_CALLS
# SF_CALLS (the two halves of CALLS) WIRE_MK WIRE_SF (the Marketo and Salesforce API calls the
# emulator counted during the run: engine and delivery pass, OAuth token requests not included) VIA (the initial sync's path, if the pass ran one)
# RECONCILED REBUILT (the report's "reconciled:" and "rebuild:" lines) keyed by leg label.

declare -A WALL RSS RECORDS QUALIFIED CALLS SHARE SYNC_S MK_CALLS SF_CALLS WIRE_MK WIRE_SF VIA RECONCILED REBUILT

# build_cli: the release CLI unless SKIP_BUILD=1; SALESYNC_BIN must then exist.
build_cli() {
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        log "building the release CLI (cargo build --release -p salesync-cli --all-features)"
        (cd "$ROOT" && cargo build --release -p salesync-cli --all-features) >&2
    fi
    [[ -x $SALESYNC_BIN ]] || die "$SALESYNC_BIN missing (build it, or set SALESYNC_BIN)"
}

EMU_PID=
EMU_USAGE="0 0"
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
    EMU_USAGE="0 0"
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

# emulator_usage: "MARKETO SALESFORCE", the API calls the running emulator has counted today
# (Marketo stats/usage.json, Salesforce limits DailyApiRequests; each answer counts the call
# asking for it, token requests are not counted). EMU_USAGE holds the last answer ("0 0" on a
# fresh emulator), so a run is measured without a probe call in its first rate window.
emulator_usage() {
    "$PYTHON" - "$MKTO_URL" "$MKTO_ID" "$MKTO_SECRET" "$SF_URL" "$SF_ID" "$SF_SECRET" <<'EOF'
import json, sys, urllib.parse, urllib.request
mkto, mkto_id, mkto_secret, sf, sf_id, sf_secret = (a.rstrip("/") for a in sys.argv[1:7])
q = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": mkto_id, "client_secret": mkto_secret})
token = json.load(urllib.request.urlopen(f"{mkto}/identity/oauth/token?{q}"))["access_token"]
req = urllib.request.Request(f"{mkto}/rest/v1/stats/usage.json", headers={"Authorization": f"Bearer {token}"})
mk = json.load(urllib.request.urlopen(req))["result"][0]["total"]
form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": sf_id, "client_secret": sf_secret}).encode()
tok = json.load(urllib.request.urlopen(urllib.request.Request(f"{sf}/services/oauth2/token", form, method="POST")))
req = urllib.request.Request(tok["instance_url"].rstrip("/") + "/services/data/v60.0/limits",
                             headers={"Authorization": "Bearer " + tok["access_token"]})
d = json.load(urllib.request.urlopen(req))["DailyApiRequests"]
print(mk, d["Max"] - d["Remaining"])
EOF
}

# salesync_env [VAR=VALUE...]: exports the running emulator's connection, a SQLite store
# (salesync.db in the current directory) and the extra environment given; for a subshell.
salesync_env() {
    export SALESYNC_MARKETO_URL=$MKTO_URL SALESYNC_MARKETO_CLIENT_ID=$MKTO_ID \
        SALESYNC_MARKETO_CLIENT_SECRET=$MKTO_SECRET SALESYNC_SALESFORCE_URL=$SF_URL \
        SALESYNC_SALESFORCE_CLIENT_ID=$SF_ID SALESYNC_SALESFORCE_CLIENT_SECRET=$SF_SECRET \
        SALESYNC_STORE=sqlite://salesync.db
    for kv in "$@"; do export "${kv?}"; done
}

# run_salesync [--store LABEL] [--rebuild] LABEL [VAR=VALUE...]: `salesync sync --once` (with
# --rebuild `salesync rebuild`) against the running emulator, with the extra environment given,
# into a fresh SQLite store, or with --store into the one an earlier leg LABEL left; fills the
# result arrays for LABEL.
run_salesync() {
    local store='' cmd=(sync --once)
    while [[ $1 == --* ]]; do
        case $1 in
            --store) store=$2; shift 2 ;;
            --rebuild) cmd=(rebuild); shift ;;
            *) die "run_salesync: unknown option $1" ;;
        esac
    done
    local label=$1
    shift
    local dir=$WORK/${store:-$label}
    if [[ -z $store ]]; then
        rm -rf "$dir"
        mkdir -p "$dir"
    fi
    [[ -f $dir/salesync.db || -z $store ]] || die "run_salesync: no store in $dir"
    log "salesync ${cmd[*]} ($label${*:+: $*}) → $dir/salesync.db"
    local before=$EMU_USAGE after
    set +e
    (
        cd "$dir"
        salesync_env "$@"
        /usr/bin/time -v -o "$WORK/$label.time" "$SALESYNC_BIN" "${cmd[@]}" \
            >"$WORK/$label.out" 2>"$WORK/$label.log"
    )
    local st=$?
    set -e
    ((st == 0)) || { tail -n 30 "$WORK/$label.log" "$WORK/$label.out" >&2; die "salesync ${cmd[*]} ($label) failed (exit $st)"; }
    after=$(emulator_usage)
    EMU_USAGE=$after
    # The usage answer counts itself: the run made after - before - 1 calls.
    WIRE_MK[$label]=$((${after% *} - ${before% *} - 1))
    WIRE_SF[$label]=$((${after#* } - ${before#* } - 1))
    local out=$WORK/$label.out
    WALL[$label]=$(wall_of "$WORK/$label.time")
    RSS[$label]=$(rss_of "$WORK/$label.time")
    RECORDS[$label]=$(sqlite_count "$dir/salesync.db" 'select count(*) from people')
    QUALIFIED[$label]=${RECORDS[$label]}
    MK_CALLS[$label]=$(sed -nE 's/^sync: .* ([0-9]+) Marketo \+ [0-9]+ Salesforce calls.*/\1/p' "$out")
    SF_CALLS[$label]=$(sed -nE 's/^sync: .* ([0-9]+) Salesforce calls.*/\1/p' "$out")
    CALLS[$label]="${MK_CALLS[$label]} + ${SF_CALLS[$label]} SF"
    SYNC_S[$label]=$(sed -nE 's/^sync: .* Salesforce calls in ([0-9.]+)s.*/\1/p' "$out")
    SHARE[$label]=$(sed -nE 's/^  Marketo share: (.*)$/\1/p' "$out")
    VIA[$label]=$(sed -nE 's/^sync: .*\(initial sync via ([A-Za-z]+)\)$/\1/p' "$out")
    RECONCILED[$label]=$(sed -nE 's/^  reconciled: (.*)$/\1/p' "$out")
    REBUILT[$label]=$(sed -nE 's/^  rebuild: (.*)$/\1/p' "$out")
    sed 's/^/  /' "$out" >&2
}

SYNC_PID=
# start_sync LABEL [VAR=VALUE...]: `salesync sync` (running, polling) against the running
# emulator into a fresh SQLite store $WORK/LABEL; returns once its initial sync is done.
start_sync() {
    local label=$1
    shift
    local dir=$WORK/$label
    rm -rf "$dir"
    mkdir -p "$dir"
    log "salesync sync ($label${*:+: $*}) → $dir/salesync.db"
    (
        cd "$dir"
        salesync_env "$@"
        exec "$SALESYNC_BIN" sync >"$WORK/$label.out" 2>"$WORK/$label.log"
    ) &
    SYNC_PID=$!
    local deadline=$((SECONDS + 3600))
    until grep -q 'phase: Idle' "$WORK/$label.log" 2>/dev/null; do
        kill -0 "$SYNC_PID" 2>/dev/null || { tail -n 20 "$WORK/$label.log" >&2; die "salesync sync ($label) exited"; }
        ((SECONDS < deadline)) || die "initial sync ($label) not done after an hour"
        sleep 0.5
    done
}

stop_sync() { # SIGTERM: a clean shutdown
    [[ -n $SYNC_PID ]] || return 0
    kill -TERM "$SYNC_PID" 2>/dev/null || true
    wait "$SYNC_PID" 2>/dev/null || true
    SYNC_PID=
}

# change_and_wait marketo|salesforce DB N: changes N people of the mirror DB through the running
# emulator's REST API and prints the seconds from the last change made until the mirror shows
# all N (gives up after 600 s).
#   marketo: the first N people get a new title (sync leads, updateOnly, 300 a call; a 606/615
#     from a busy instance is sent again).
#   salesforce: N mirrored contacts without an opportunity each get a new open Opportunity and
#     a primary OpportunityContactRole (OAuth client credentials; sObject create, one record a
#     call, 8 calls at a time); the mirror must show each person's new opportunity id.
change_and_wait() {
    local mode=$1 db=$2 n=$3
    "$PYTHON" - "$mode" "$db" "$n" "$MKTO_URL" "$MKTO_ID" "$MKTO_SECRET" "$SF_URL" "$SF_ID" "$SF_SECRET" <<'EOF'
import concurrent.futures, json, sqlite3, sys, time, urllib.error, urllib.parse, urllib.request
mode, db, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
mkto, mkto_id, mkto_secret, sf, sf_id, sf_secret = (a.rstrip("/") for a in sys.argv[4:10])
con = sqlite3.connect(db)

def call(url, body, headers, form=False):
    data = urllib.parse.urlencode(body).encode() if form else json.dumps(body).encode()
    kind = "application/x-www-form-urlencoded" if form else "application/json"
    req = urllib.request.Request(url, data, method="POST", headers={"Content-Type": kind, **headers})
    try:
        return json.load(urllib.request.urlopen(req))
    except urllib.error.HTTPError as e:
        sys.exit(f"POST {url}: {e.code} {e.read()[:300]!r}")

def marketo():
    ids = [r[0] for r in con.execute("select marketo_id from people order by marketo_id limit ?", (n,))]
    assert len(ids) == n, f"only {len(ids)} people in the mirror"
    q = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": mkto_id, "client_secret": mkto_secret})
    auth = {"Authorization": "Bearer " + json.load(urllib.request.urlopen(f"{mkto}/identity/oauth/token?{q}"))["access_token"]}
    title = f"bench {time.time():.0f}"
    for i in range(0, n, 300):
        body = {"action": "updateOnly", "lookupField": "id", "input": [{"id": x, "title": title} for x in ids[i:i + 300]]}
        for _ in range(100):  # 606/615 from a busy instance: the call did nothing, send it again
            answer = call(f"{mkto}/rest/v1/leads.json", body, auth)
            if answer.get("success"):
                break
            assert answer["errors"][0]["code"] in ("606", "615"), answer
            time.sleep(0.5)
        else:
            sys.exit("the change call kept failing")
        bad = [r for r in answer["result"] if r.get("status") != "updated"]
        assert not bad, bad[:3]
    return {i: title for i in ids}, "select marketo_id, title from people where marketo_id in ({})"

def salesforce():
    rows = con.execute("select marketo_id, salesforce_contact_id from people where salesforce_type = 'Contact'"
                       " and salesforce_contact_id is not null and opportunity_id is null"
                       " order by marketo_id limit ?", (n,)).fetchall()
    assert len(rows) == n, f"only {len(rows)} mirrored contacts without an opportunity"
    tok = call(f"{sf}/services/oauth2/token", {"grant_type": "client_credentials", "client_id": sf_id,
                                               "client_secret": sf_secret}, {}, form=True)
    base = tok["instance_url"].rstrip("/") + "/services/data/v60.0/sobjects"
    auth = {"Authorization": "Bearer " + tok["access_token"]}

    def create(kind, fields):
        answer = call(f"{base}/{kind}/", fields, auth)
        assert answer.get("success") and answer.get("id"), answer
        return answer["id"]

    def one(row):
        mid, contact = row
        opp = create("Opportunity", {"Name": f"Bench deal {mid}", "StageName": "Prospecting", "CloseDate": "2027-06-30"})
        create("OpportunityContactRole", {"OpportunityId": opp, "ContactId": contact, "IsPrimary": True})
        return mid, opp[:15]  # the mirror may hold the 15- or the 18-character form

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        want = dict(pool.map(one, rows))
    return want, "select marketo_id, substr(opportunity_id, 1, 15) from people where marketo_id in ({})"

want, sql = {"marketo": marketo, "salesforce": salesforce}[mode]()
t0 = time.monotonic()  # the last change has been made
print(f"{mode}: last of {n} changes made at {time.strftime('%H:%M:%S', time.gmtime())}.{int(time.time() % 1 * 1000):03d} UTC",
      file=sys.stderr)
ids = list(want)
sql = sql.format(",".join("?" * len(ids)))
while True:
    done = sum(1 for i, v in con.execute(sql, ids) if want[i] == v)
    if done == n:
        print(f"{time.monotonic() - t0:.1f}")
        break
    if time.monotonic() - t0 > 600:
        sys.exit(f"only {done} of {n} changes mirrored after 600 s")
    time.sleep(0.2)
EOF
}
