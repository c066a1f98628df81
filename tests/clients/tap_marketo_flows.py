"""tap-marketo (Singer, PyPI, unmodified) against `salesync emulate`'s Marketo emulator.

tap-marketo has no base-URL setting: it builds every URL as https://<munchkin>.mktorest.com/...
from the Munchkin id in `endpoint`. The launcher below swaps only that base URL (its
`Client.get_url`) for the emulator's, as scripts/bench-peer.sh does; everything else is the tap as
published, run as its own process (`--discover`, then a sync with `--properties`).

Flows: discover (the leads stream and its schema), and a full pull of the leads stream through the
Bulk Lead Extract (30-day export windows from start_date to now) whose distinct lead ids must be
exactly the emulator's seeded leads 1001..1000+PEOPLE (run against a fresh emulator, before any
other client changes it). A lead whose updatedAt falls exactly on a window boundary is emitted
twice (the tap starts each window at the previous endAt and the filter includes both ends), so
records are counted by distinct id, and the raw count is printed.
"""

import json
import os
import subprocess
import sys
import tempfile

from harness import Flows, check, env

PEOPLE = int(env("PEOPLE"))
WORK = tempfile.mkdtemp(prefix="tap-marketo-")
LAUNCHER = os.path.join(WORK, "tap-marketo-emulated.py")
CONFIG = os.path.join(WORK, "config.json")
with open(LAUNCHER, "w") as f:
    f.write(
        "import os, sys\n"
        "import tap_marketo.client\n"
        "BASE = os.environ['TAP_MARKETO_BASE_URL'].rstrip('/')\n"
        "tap_marketo.client.Client.get_url = lambda self, url: '{}/{}'.format(BASE, url)\n"
        "import tap_marketo\n"
        "sys.exit(tap_marketo.main())\n")
with open(CONFIG, "w") as f:
    json.dump({
        # Only the Munchkin id in these is used (the launcher supplies the base URL).
        "endpoint": "https://123-ABC-456.mktorest.com/rest",
        "identity": "https://123-ABC-456.mktorest.com/identity",
        "client_id": env("MKTO_ID"),
        "client_secret": env("MKTO_SECRET"),
        "start_date": "2024-01-01T00:00:00Z",  # the seed's createdAt start from 2024-01-01
        # seconds between export status polls (its default, 300, is a wait per 30-day window)
        "poll_interval": 0.2,
    }, f)

F = Flows("tap-marketo")
S = {}


def tap(*args):
    p = subprocess.run([sys.executable, LAUNCHER, "--config", CONFIG, *args], capture_output=True, text=True,
                       env=dict(os.environ, TAP_MARKETO_BASE_URL=env("MKTO_URL")), timeout=600)
    if p.returncode != 0:
        raise AssertionError("tap-marketo {} exited {}: {}".format(" ".join(args), p.returncode, p.stderr[-3000:]))
    return p.stdout


@F.flow("discover")
def _():
    catalog = json.loads(tap("--discover"))
    streams = {s["tap_stream_id"]: s for s in catalog["streams"]}
    check("leads" in streams, "streams {}".format(sorted(streams)))
    leads = streams["leads"]
    props = leads["schema"]["properties"]
    check({"id", "email", "updatedAt", "createdAt"} <= set(props), "leads schema {}".format(sorted(props)))
    for entry in leads["metadata"]:
        entry["metadata"]["selected"] = True
    S["catalog"] = os.path.join(WORK, "catalog.json")
    with open(S["catalog"], "w") as f:
        json.dump({"streams": [leads]}, f)  # --properties: tap-marketo indexes it as a dict
    print("  discover: {} streams, {} lead fields".format(len(streams), len(props)), flush=True)


@F.flow("leads_full_pull_bulk_export")
def _():
    out = tap("--properties", S["catalog"])
    records, states = [], []
    for line in out.splitlines():
        msg = json.loads(line)
        if msg["type"] == "RECORD":
            check(msg["stream"] == "leads", "record of stream {}".format(msg["stream"]))
            records.append(msg["record"])
        elif msg["type"] == "STATE":
            states.append(msg["value"])
    ids = {int(r["id"]) for r in records}
    print("  leads: {} records emitted, {} distinct ids, emulator {} leads".format(len(records), len(ids), PEOPLE),
          flush=True)
    check(ids == set(range(1001, 1001 + PEOPLE)),
          "{} distinct lead ids, the emulator has {} (missing {}, extra {})".format(
              len(ids), PEOPLE, sorted(set(range(1001, 1001 + PEOPLE)) - ids)[:10],
              sorted(ids - set(range(1001, 1001 + PEOPLE)))[:10]))
    check(all(r.get("email") for r in records), "a record without email")
    check(states and "leads" in states[-1].get("bookmarks", {}), "no leads bookmark in the final state {}".format(
        states[-1:] if states else None))


F.run()
