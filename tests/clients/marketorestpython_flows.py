"""marketorestpython (PyPI, unmodified) against `salesync emulate`'s Marketo emulator.

Only the base URL changes: the client builds https://<munchkin>.mktorest.com from its Munchkin id
and keeps it in `MarketoClient.host`; that attribute is set to the emulator's URL after
construction. Every call below is the client's own public method (through `execute`, as its README
shows), except the short-form GET `leads.json?filterType=...` which the client has no method for:
that one goes through the client's own HTTP layer (`_api_call('get', ...)`, what every GET method
of the client uses).

Seeded world (crates/emulator/src/seed.rs): lead ids 1001..1000+PEOPLE, each with an email and an
`sfdcLeadOwnerId`.
"""

import csv
import io
import time
import uuid

from harness import Flows, check, env
from marketorestpython.client import MarketoClient

PEOPLE = int(env("PEOPLE"))
mc = MarketoClient("123-ABC-456", env("MKTO_ID"), env("MKTO_SECRET"), max_retry_time=60, requests_timeout=30)
mc.host = env("MKTO_URL").rstrip("/")

F = Flows("marketorestpython")
S = {}  # state shared by the flows, in order
RUN = uuid.uuid4().hex[:8]


def ex(method, **kw):
    return mc.execute(method=method, **kw)


@F.flow("authenticate")
def _():
    mc.authenticate()
    check(mc.token and mc.token_type == "bearer", "token {!r} type {!r}".format(mc.token, getattr(mc, "token_type", None)))
    check(mc.expires_in > 0, "expires_in {}".format(mc.expires_in))


@F.flow("get_lead_by_id")
def _():
    fields = ["id", "email", "firstName", "lastName", "createdAt", "updatedAt", "sfdcLeadOwnerId"]
    # a seeded lead with every one of these set (Marketo leaves null fields out of the record)
    ids = ["{}".format(i) for i in range(1001, 1031)]
    full = [x for x in by_filter_long("id", ids, fields) if all(f in x for f in fields)]
    check(full, "none of leads 1001..1030 has all of {}".format(fields))
    lead_id = full[0]["id"]
    r = ex("get_lead_by_id", id=lead_id, fields=fields)  # a list: repeated ?fields= keys
    check(len(r) == 1 and r[0]["id"] == lead_id, "result {}".format(r))
    missing = [f for f in fields if f not in r[0]]
    check(not missing, "fields missing from the answer: {} (got {})".format(missing, sorted(r[0])))
    check(r[0] == full[0], "by id {} != by filter {}".format(r[0], full[0]))
    S["lead"] = r[0]
    r = ex("get_lead_by_id", id=lead_id)  # default fields
    check(r and r[0]["id"] == lead_id and "email" in r[0], "default fields {}".format(r))
    check(ex("get_lead_by_id", id=10**9) == [], "an unknown id is an empty result")


def by_filter_long(filter_type, values, fields, batch_size=None):
    return ex("get_multiple_leads_by_filter_type", filterType=filter_type, filterValues=values, fields=fields,
              batchSize=batch_size)


def by_filter_short(filter_type, values, fields, batch_size=None):
    """GET /rest/v1/leads.json?filterType=..&filterValues=..&fields=.. through the client's HTTP layer,
    following nextPageToken like its long form does."""
    mc.authenticate()
    args = {"filterType": filter_type, "filterValues": ",".join(values), "fields": ",".join(fields)}
    if batch_size:
        args["batchSize"] = batch_size
    out = []
    while True:
        a = dict(args, access_token=mc.token)
        r = mc._api_call("get", mc.host + "/rest/v1/leads.json", a)
        out.extend(r["result"])
        if not r["result"] or "nextPageToken" not in r:
            return out
        args["nextPageToken"] = r["nextPageToken"]


@F.flow("leads_by_id_long_form")
def _():
    ids = [str(i) for i in range(1001, 1011)]
    r = by_filter_long("id", ids, ["id", "email", "createdAt"])
    check(sorted(x["id"] for x in r) == list(range(1001, 1011)), "ids {}".format([x["id"] for x in r]))
    check(all("createdAt" in x and "email" in x for x in r), "fields missing: {}".format(r[:2]))


@F.flow("leads_by_id_short_form")
def _():
    r = by_filter_short("id", ["1001", "1002", "1003"], ["id", "email", "updatedAt"])
    check(sorted(x["id"] for x in r) == [1001, 1002, 1003], "ids {}".format([x["id"] for x in r]))
    check(all("updatedAt" in x for x in r), "updatedAt missing: {}".format(r))


@F.flow("leads_by_email_long_form")
def _():
    email = S["lead"]["email"]
    r = by_filter_long("email", [email], ["id", "email", "firstName"])
    check(S["lead"]["id"] in [x["id"] for x in r], "lead not found by its email {}: {}".format(email, r))
    check(all(x["email"].lower() == email.lower() for x in r), "other emails: {}".format(r))


@F.flow("leads_by_email_short_form")
def _():
    email = S["lead"]["email"]
    r = by_filter_short("email", [email], ["id", "email"])
    check(S["lead"]["id"] in [x["id"] for x in r], "lead not found by its email {}: {}".format(email, r))


@F.flow("leads_by_owner_long_form_paged")
def _():
    owner = S["lead"]["sfdcLeadOwnerId"]
    r = by_filter_long("sfdcLeadOwnerId", [owner], ["id", "sfdcLeadOwnerId"], batch_size=50)
    check(S["lead"]["id"] in [x["id"] for x in r], "lead not among its owner's leads")
    check(all(x["sfdcLeadOwnerId"] == owner for x in r), "other owners in the answer")
    check(len(r) > 50, "owner {} has {} leads: paging (batchSize 50) not exercised".format(owner, len(r)))
    check(len({x["id"] for x in r}) == len(r), "a lead repeated across pages")
    S["owner_count"] = len(r)


@F.flow("leads_by_owner_short_form_paged")
def _():
    owner = S["lead"]["sfdcLeadOwnerId"]
    r = by_filter_short("sfdcLeadOwnerId", [owner], ["id", "sfdcLeadOwnerId"], batch_size=60)
    check(len(r) == S["owner_count"], "short form {} leads, long form {}".format(len(r), S["owner_count"]))


@F.flow("describe")
def _():
    r = ex("describe")
    names = {f["rest"]["name"] for f in r}
    check({"id", "email", "firstName", "lastName", "updatedAt"} <= names, "describe fields {}".format(sorted(names)))
    check(all("dataType" in f and "displayName" in f for f in r), "describe entries lack dataType/displayName")
    r2 = ex("describe2")
    check(r2 and "fields" in r2[0] and "searchableFields" in r2[0], "describe2 {}".format(str(r2)[:300]))


@F.flow("activity_types")
def _():
    r = ex("get_activity_types")
    ids = {t["id"] for t in r}
    check({1, 2, 12, 13} <= ids, "standard activity types missing: {}".format(sorted(ids)))
    S["activity_types"] = r


@F.flow("paging_token")
def _():
    t = ex("get_paging_token", sinceDatetime="2024-01-01T00:00:00Z")
    check(isinstance(t, str) and t, "token {!r}".format(t))
    S["token"] = t


@F.flow("lead_changes")
def _():
    pages = 0
    seen = 0
    for page in mc.get_lead_changes_yield(fields=["email", "firstName", "lastName"], nextPageToken=S["token"],
                                          batchSize=50, max_empty_more_results=3):
        pages += 1
        seen += len(page)
        check(all("leadId" in a and "activityDate" in a and a["activityTypeId"] in (12, 13) for a in page),
              "not lead-change activities: {}".format(page[:1]))
        if pages == 3:
            break
    check(seen > 0, "no lead changes since 2024-01-01")


@F.flow("lead_activities")
def _():
    type_ids = [str(t["id"]) for t in S["activity_types"]][:10]
    pages = 0
    seen = 0
    for page in mc.get_lead_activities_yield(activityTypeIds=type_ids, sinceDatetime="2024-01-01T00:00:00Z",
                                             batchSize=100, max_empty_more_results=3):
        pages += 1
        seen += len(page)
        check(all(str(a["activityTypeId"]) in type_ids for a in page), "other activity types returned")
        if pages == 3:
            break
    check(seen > 0, "no activities of types {} since 2024-01-01".format(type_ids))
    r = ex("get_lead_activities", activityTypeIds=type_ids, sinceDatetime="2024-01-01T00:00:00Z", leadIds="1001,1002")
    check(all(a["leadId"] in (1001, 1002) for a in r), "leadIds filter ignored")


@F.flow("bulk_lead_export")
def _():
    # Marketo caps an export's date filter at 31 days: the first month of the seeded world, whose
    # leads are counted from a read of every lead by id (300 ids per call).
    start, end = "2024-01-01T00:00:00Z", "2024-01-31T00:00:00Z"
    ids = [str(i) for i in range(1001, 1001 + PEOPLE)]
    everyone = []
    for i in range(0, len(ids), 300):
        everyone += by_filter_long("id", ids[i:i + 300], ["id", "createdAt"], batch_size=300)
    check(len(everyone) == PEOPLE, "{} leads read by id, {} seeded".format(len(everyone), PEOPLE))
    expected = sorted(x["id"] for x in everyone if start <= x["createdAt"] <= end)
    check(expected, "no lead created in {}..{}".format(start, end))
    job = mc.create_leads_export_job(
        fields=["id", "email", "firstName", "lastName", "createdAt"],
        filters={"createdAt": {"startAt": start, "endAt": end}})
    check(job and job[0]["status"] == "Created", "create {}".format(job))
    job_id = job[0]["exportId"]
    r = mc.enqueue_leads_export_job(job_id)
    check(r[0]["status"] in ("Queued", "Processing", "Completed"), "enqueue {}".format(r))
    deadline = time.monotonic() + 60
    while True:
        st = mc.get_leads_export_job_status(job_id)[0]
        if st["status"] == "Completed":
            break
        check(st["status"] in ("Queued", "Processing"), "status {}".format(st))
        check(time.monotonic() < deadline, "export not completed in 60 s: {}".format(st))
        time.sleep(1)
    data = mc.get_leads_export_job_file(job_id)
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    got = sorted(int(r["id"]) for r in rows)
    check(got == expected, "export file has {} leads, {} were created in the window".format(len(got), len(expected)))
    check(st.get("numberOfRecords") == len(expected), "status numberOfRecords {}".format(st.get("numberOfRecords")))
    check(set(rows[0]) == {"id", "email", "firstName", "lastName", "createdAt"}, "columns {}".format(list(rows[0])))
    jobs = mc._get_export_jobs_list("leads")
    check(job_id in [j["exportId"] for j in jobs], "job missing from the export list")


@F.flow("custom_activity_types")
def _():
    api = "salesyncCi{}".format(RUN)  # alphanumeric, as Marketo requires
    before = ex("get_custom_activity_types")
    created = ex("create_custom_activity_type", apiName=api, name="Salesync CI " + RUN, triggerName="Did CI " + RUN,
                 filterName="Did CI " + RUN, primaryAttributeApiName="subject" + RUN, primaryAttributeName="Subject",
                 description="created by tests/clients")
    check(created and created[0]["apiName"] == api, "create {}".format(created))
    ex("create_custom_activity_type_attribute", apiName=api,
       attributes=[{"apiName": "score" + RUN, "name": "Score", "dataType": "integer"}])
    ex("approve_custom_activity_type", apiName=api)
    d = ex("describe_custom_activity_type", apiName=api)
    check(d and d[0]["apiName"] == api and d[0]["status"] == "approved", "describe {}".format(d))
    attrs = [a["apiName"] for a in d[0].get("attributes", [])]
    check("score" + RUN in attrs, "attribute missing: {}".format(attrs))
    after = ex("get_custom_activity_types")
    check(len(after) == len(before) + 1 and api in [t["apiName"] for t in after], "list {}".format(after))
    S["cat"] = d[0]


@F.flow("add_custom_activities")
def _():
    t = S["cat"]
    r = ex("add_custom_activities", input=[
        {"leadId": 1001, "activityDate": "2026-01-02T03:04:05Z", "activityTypeId": t["id"],
         "primaryAttributeValue": "CI " + RUN, "attributes": [{"apiName": "score" + RUN, "value": 7}]},
        {"leadId": 1002, "activityDate": "2026-01-02T03:04:06Z", "activityTypeId": t["id"],
         "primaryAttributeValue": "CI2 " + RUN, "attributes": []},
    ])
    check([x["status"] for x in r] == ["added", "added"], "add {}".format(r))
    got = ex("get_lead_activities", activityTypeIds=[str(t["id"])], sinceDatetime="2026-01-01T00:00:00Z")
    mine = [a for a in got if a.get("primaryAttributeValue", "").endswith(RUN)]
    check(sorted(a["leadId"] for a in mine) == [1001, 1002], "activities read back: {}".format(got))


@F.flow("bulk_activity_export")
def _():
    t = S["cat"]
    job = mc.create_activities_export_job(
        filters={"createdAt": {"startAt": "2026-01-01T00:00:00Z", "endAt": "2026-01-31T00:00:00Z"},
                 "activityTypeIds": [t["id"]]})
    job_id = job[0]["exportId"]
    mc.enqueue_activities_export_job(job_id)
    deadline = time.monotonic() + 60
    while mc.get_activities_export_job_status(job_id)[0]["status"] != "Completed":
        check(time.monotonic() < deadline, "activity export not completed in 60 s")
        time.sleep(1)
    rows = list(csv.DictReader(io.StringIO(mc.get_activities_export_job_file(job_id).decode("utf-8"))))
    mine = [r for r in rows if r["primaryAttributeValue"].endswith(RUN)]
    check(sorted(int(r["leadId"]) for r in mine) == [1001, 1002], "exported activities {}".format(rows))
    check(all(int(r["activityTypeId"]) == t["id"] for r in rows), "other activity types exported")


@F.flow("sync_leads")
def _():
    e1, e2 = "ci-{}-a@clients.example.com".format(RUN), "ci-{}-b@clients.example.com".format(RUN)
    r = ex("create_update_leads", leads=[{"email": e1, "firstName": "Ada", "lastName": "CI"},
                                         {"email": e2, "firstName": "Bob", "lastName": "CI"}],
           action="createOnly", lookupField="email")
    check([x["status"] for x in r] == ["created", "created"], "create {}".format(r))
    S["new_ids"] = [x["id"] for x in r]
    r = ex("create_update_leads", leads=[{"email": e1, "title": "Engineer"}], action="updateOnly", lookupField="email")
    check(r[0]["status"] == "updated" and r[0]["id"] == S["new_ids"][0], "update {}".format(r))
    r = ex("create_update_leads", leads=[{"email": e1}], action="createOnly", lookupField="email")
    check(r[0]["status"] == "skipped", "createOnly on an existing email: {}".format(r))
    r = ex("create_update_leads", leads=[{"id": 1003, "title": "CI " + RUN}], action="updateOnly", lookupField="id")
    check(r[0]["status"] == "updated", "update by id {}".format(r))
    got = ex("get_lead_by_id", id=S["new_ids"][0], fields=["email", "title"])
    check(got and got[0]["title"] == "Engineer", "read back {}".format(got))


@F.flow("merge_leads")
def _():
    winner, loser = S["new_ids"]
    ok = ex("merge_lead", id=winner, leadIds=[loser])
    check(ok is True, "merge {}".format(ok))
    check(ex("get_lead_by_id", id=loser) == [], "the merged-away lead still exists")
    check(ex("get_lead_by_id", id=winner), "the winner is gone")


@F.flow("delete_leads")
def _():
    winner = S["new_ids"][0]
    r = ex("delete_lead", id=[winner])  # DELETE /rest/v1/leads.json
    check(r and r[0]["id"] == winner and r[0]["status"] == "deleted", "delete {}".format(r))
    check(ex("get_lead_by_id", id=winner) == [], "the deleted lead still exists")


@F.flow("deleted_leads")
def _():
    token = ex("get_paging_token", sinceDatetime=time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() - 86400)))
    r = ex("get_deleted_leads", nextPageToken=token, batchSize=100)
    ids = [a["leadId"] for a in r]
    check(S["new_ids"][0] in ids, "the deleted lead {} is not among the deleted leads {}".format(S["new_ids"][0], ids))


@F.flow("usage_stats")
def _():
    r = ex("get_daily_usage")
    check(isinstance(r, list), "usage {}".format(r))


@F.flow("push_lead")
def _():
    e = "ci-{}-push@clients.example.com".format(RUN)
    r = ex("push_lead", leads=[{"email": e, "firstName": "Pushed"}, {"id": 1004, "email": None}],
           programName="Salesync Newsletter", lookupField="email", source="tests/clients", reason="CI push")
    check(r[0]["status"] == "created" and isinstance(r[0]["id"], int), "push {}".format(r))
    check(r[1]["status"] == "skipped", "a record with id and no email is not pushed: {}".format(r))
    S["pushed"] = r[0]["id"]
    r = ex("push_lead", leads=[{"email": e, "title": "Pushed " + RUN}], programName="Salesync Newsletter",
           programStatus="Engaged")
    check(r == [{"id": S["pushed"], "status": "updated"}], "second push {}".format(r))
    got = ex("get_lead_by_id", id=S["pushed"], fields=["email", "title"])
    check(got and got[0]["title"] == "Pushed " + RUN, "read back {}".format(got))
    try:
        ex("push_lead", leads=[{"email": e}], programName="No Such Program " + RUN)
    except Exception as err:  # the client raises MarketoException with the error object
        check("1013" in str(err), "unknown program: {}".format(err))
    else:
        check(False, "an unknown program was accepted")


@F.flow("get_leads_by_program_id")
def _():
    r = ex("get_multiple_leads_by_program_id", programId=1002, fields=["email", "title"], batchSize=50)
    mine = [x for x in r if x["id"] == S["pushed"]]
    check(mine, "the pushed lead is not a member of program 1002: {}".format(r))
    check(mine[0]["membership"]["progressionStatus"] == "Engaged", "membership {}".format(mine[0]))
    check(mine[0]["membership"]["acquiredBy"] is True, "acquiredBy {}".format(mine[0]))


@F.flow("change_lead_program_status")
def _():
    r = ex("change_lead_program_status", id=1001, leadIds=[1005, 1006], status="Registered")
    check([x["status"] for x in r] == ["updated", "updated"], "change {}".format(r))
    r = ex("change_lead_program_status", id=1001, leadIds=[1005], status="Attended")
    check(r[0]["status"] == "updated", "attended {}".format(r))
    members = {x["id"]: x["membership"] for x in ex("get_multiple_leads_by_program_id", programId=1001)}
    check(members.get(1005, {}).get("progressionStatus") == "Attended" and members[1005]["reachedSuccess"],
          "1005 membership {}".format(members.get(1005)))
    check(members.get(1006, {}).get("progressionStatus") == "Registered", "1006 membership {}".format(members.get(1006)))
    try:
        ex("change_lead_program_status", id=1001, leadIds=[1005], status="Not A Status")
    except Exception as err:
        check("1003" in str(err), "invalid status: {}".format(err))
    else:
        check(False, "an invalid status was accepted")


@F.flow("describe_program_member")
def _():
    r = ex("describe_program_member")
    names = {f["name"] for f in r[0]["fields"]}
    check({"leadId", "programId", "progressionStatus", "membershipDate"} <= names, "fields {}".format(sorted(names)))


@F.flow("submit_form")
def _():
    e = "ci-{}-form@clients.example.com".format(RUN)
    r = ex("submit_form", formId=1001, input={
        "leadFormFields": {"email": e, "firstName": "Form", "company": "CI " + RUN},
        "visitorData": {"pageURL": "https://clients.example.com/webinar", "leadClientIpAddress": "192.0.2.1",
                        "userAgentString": "marketorestpython"}})
    check(r[0]["status"] == "created", "submit {}".format(r))
    lead_id = r[0]["id"]
    acts = ex("get_lead_activities", activityTypeIds=["2"], sinceDatetime="2024-01-01T00:00:00Z",
              leadIds=str(lead_id))
    check(len(acts) == 1 and acts[0]["primaryAttributeValueId"] == 1001, "Fill Out Form activities {}".format(acts))
    changes = []
    for page in mc.get_lead_changes_yield(fields=["email"], leadIds=str(lead_id), batchSize=100,
                                          sinceDatetime="2024-01-01T00:00:00Z", max_empty_more_results=3):
        changes += page
    check([a["activityTypeId"] for a in changes] == [12], "New Lead activity {}".format(changes))
    try:
        ex("submit_form", formId=424242, input={"leadFormFields": {"email": e}})
    except Exception as err:
        check("1013" in str(err), "unknown form: {}".format(err))
    else:
        check(False, "an unknown form was accepted")


@F.flow("lead_partitions")
def _():
    parts = [p["name"] for p in ex("get_lead_partitions")]
    check("Default" in parts and "EMEA" in parts, "partitions {}".format(parts))
    r = ex("update_leads_partition", input=[{"id": 1007, "partitionName": "EMEA"}])
    check(r == [{"id": 1007, "status": "updated"}], "move {}".format(r))
    got = ex("get_lead_by_id", id=1007, fields=["leadPartitionId"])
    check(got[0]["leadPartitionId"] == 2, "partition {}".format(got))


@F.flow("bulk_lead_import")
def _():
    import os
    import tempfile
    good = "ci-{}-import@clients.example.com".format(RUN)
    rows = "email,firstName,leadScore,title\n{},Imported,5,CI\nci-{}-bad@clients.example.com,Bad,lots,\n{},Long,,{}\n".format(
        good, RUN, "ci-{}-long@clients.example.com".format(RUN), "T" * 300)
    fd, path = tempfile.mkstemp(suffix=".csv")
    with os.fdopen(fd, "w") as f:
        f.write(rows)
    try:
        r = ex("import_lead", format="csv", file=path, lookupField="email")
    finally:
        os.unlink(path)
    check(r and r[0]["status"] in ("Queued", "Importing", "Complete"), "import {}".format(r))
    batch = r[0]["batchId"]
    deadline = time.monotonic() + 60
    while True:
        st = ex("get_import_lead_status", id=batch)[0]
        if st["status"] in ("Complete", "Failed"):
            break
        check(st["status"] in ("Queued", "Importing"), "status {}".format(st))
        check(time.monotonic() < deadline, "import not finished in 60 s: {}".format(st))
        time.sleep(1)
    check(st["status"] == "Complete", "status {}".format(st))
    check((st["numOfLeadsProcessed"], st["numOfRowsFailed"], st["numOfRowsWithWarning"]) == (2, 1, 1),
          "counts {}".format(st))
    failures = list(csv.DictReader(io.StringIO(ex("get_import_failure_file", id=batch))))
    check(len(failures) == 1 and failures[0]["firstName"] == "Bad" and failures[0]["Import Failure Reason"],
          "failures {}".format(failures))
    warnings = list(csv.DictReader(io.StringIO(ex("get_import_warning_file", id=batch))))
    check(len(warnings) == 1 and warnings[0]["firstName"] == "Long" and warnings[0]["Import Warning Reason"],
          "warnings {}".format(warnings))
    got = by_filter_long("email", [good], ["email", "firstName", "leadScore"])
    check(got and got[0]["firstName"] == "Imported" and got[0]["leadScore"] == 5, "imported lead {}".format(got))


F.run()
