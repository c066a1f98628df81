"""Shared by the client fidelity scripts (tests/clients/*.py): run named flows, print one line per
flow (`PASS name` / `FAIL name: why`) and a closing `SUMMARY {json}` line; exit 1 if any failed.

Connection details come from the environment the Rust test (crates/cli/tests/clients.rs) sets from
the `salesync emulate` line: MKTO_URL MKTO_ID MKTO_SECRET SF_URL SF_ID SF_SECRET, and PEOPLE.
"""

import json
import os
import sys
import time
import traceback


class Flows:
    def __init__(self, client):
        self.client = client
        self.flows = []  # (name, fn)

    def flow(self, name):
        def register(fn):
            self.flows.append((name, fn))
            return fn

        return register

    def run(self):
        results = []
        for name, fn in self.flows:
            start = time.monotonic()
            try:
                fn()
            except Exception as e:  # a failed flow: say why, go on with the next
                why = "{}: {}".format(type(e).__name__, e).replace("\n", " ")
                if os.environ.get("CLIENTS_TRACEBACK"):
                    traceback.print_exc()
                results.append({"flow": name, "ok": False, "why": why[:2000]})
                print("FAIL {}: {}".format(name, why[:2000]), flush=True)
            else:
                results.append({"flow": name, "ok": True, "seconds": round(time.monotonic() - start, 2)})
                print("PASS {}".format(name), flush=True)
        passed = sum(r["ok"] for r in results)
        summary = {"client": self.client, "run": len(results), "passed": passed, "flows": results}
        print("SUMMARY " + json.dumps(summary), flush=True)
        sys.exit(0 if passed == len(results) else 1)


def env(name):
    value = os.environ.get(name)
    if not value:
        sys.exit("{} not set (run through crates/cli/tests/clients.rs)".format(name))
    return value


def check(cond, what):
    if not cond:
        raise AssertionError(what)
