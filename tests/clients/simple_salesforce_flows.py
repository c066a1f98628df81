"""simple-salesforce (PyPI, unmodified) against `salesync emulate`'s Salesforce emulator.

Login is the client's OAuth 2.0 client-credentials flow (`consumer_key`, `consumer_secret`,
`domain`): it POSTs grant_type=client_credentials with HTTP Basic client credentials to
https://<domain>.salesforce.com/services/oauth2/token and uses the `instance_url` of the answer.
The client writes every URL as https://...; the emulator speaks plain HTTP on loopback. So the
only plumbing is the base URL: the client is handed a requests.Session (its documented `session`
argument) that sends https://<domain>.salesforce.com to the emulator and https://<emulator host>
as http://. Every call below is the client's own public API.

simple-salesforce has no dedicated method for the composite resources: sObject Collections
(/composite/sobjects), the composite request (/composite) and composite batch (/composite/batch)
go through the client's generic `restful` call, as its users do.
"""

import csv
import io
import time
import urllib.parse
import uuid
from datetime import datetime, timedelta, timezone

import requests
from harness import Flows, check, env
from simple_salesforce import Salesforce, SalesforceMalformedRequest, SalesforceResourceNotFound

SF_URL = env("SF_URL").rstrip("/")
DOMAIN = "salesync-emulator.my"  # https://salesync-emulator.my.salesforce.com: the token URL
_emu = urllib.parse.urlsplit(SF_URL)


class EmulatorSession(requests.Session):
    """The base URL swap: the login host and the https:// instance URLs go to the emulator."""

    def request(self, method, url, *args, **kwargs):
        u = urllib.parse.urlsplit(url)
        if u.hostname == DOMAIN + ".salesforce.com" or u.netloc == _emu.netloc:
            url = urllib.parse.urlunsplit((_emu.scheme, _emu.netloc, u.path, u.query, u.fragment))
        return super().request(method, url, *args, **kwargs)


F = Flows("simple-salesforce")
S = {}
RUN = uuid.uuid4().hex[:10]
sf = None


@F.flow("login_client_credentials")
def _():
    global sf
    sf = Salesforce(consumer_key=env("SF_ID"), consumer_secret=env("SF_SECRET"), domain=DOMAIN,
                    session=EmulatorSession(), version="59.0")
    check(sf.session_id and sf.sf_instance == _emu.netloc, "session {!r} instance {!r}".format(sf.session_id, sf.sf_instance))
    try:  # a wrong secret is refused the way the client reports it
        Salesforce(consumer_key=env("SF_ID"), consumer_secret="wrong", domain=DOMAIN, session=EmulatorSession())
    except Exception as e:
        check(type(e).__name__ == "SalesforceAuthenticationFailed", "wrong secret raised {!r}".format(e))
    else:
        raise AssertionError("a wrong client secret logged in")


@F.flow("sobject_crud")
def _():
    r = sf.Contact.create({"LastName": "CI " + RUN, "Email": "ci-{}@clients.example.com".format(RUN)})
    check(r["success"] is True and r["id"].startswith("003"), "create {}".format(r))
    cid = r["id"]
    got = sf.Contact.get(cid)
    check(got["Id"] == cid and got["LastName"] == "CI " + RUN, "get {}".format(got))
    status = sf.Contact.update(cid, {"Title": "Tester"})
    check(status == 204, "update status {}".format(status))
    check(sf.Contact.get(cid)["Title"] == "Tester", "update not read back")
    kept = sf.Contact.create({"LastName": "CI kept " + RUN})["id"]
    S["updated_contact"] = kept
    status = sf.Contact.delete(cid)
    check(status == 204, "delete status {}".format(status))
    S["last_write"] = datetime.now(timezone.utc)
    try:
        sf.Contact.get(cid)
    except SalesforceResourceNotFound:
        pass
    else:
        raise AssertionError("a deleted contact is still readable")
    S["deleted_contact"] = cid


@F.flow("query")
def _():
    r = sf.query("SELECT Id, Email, LastName FROM Contact ORDER BY Id LIMIT 5")
    check(r["totalSize"] == 5 and r["done"] is True and len(r["records"]) == 5, "answer {}".format(r))
    rec = r["records"][0]
    check(rec["attributes"]["type"] == "Contact" and rec["Id"].startswith("003"), "record {}".format(rec))
    S["contact"] = rec
    r = sf.query("SELECT COUNT() FROM Contact")
    check(r["totalSize"] > 5 and r["records"] == [], "COUNT() {}".format(r))
    S["contacts"] = r["totalSize"]


@F.flow("query_more_paging")
def _():
    hdr = {"Sforce-Query-Options": "batchSize=200"}
    r = sf.query("SELECT Id FROM Contact", headers=hdr)
    check(r["done"] is False and len(r["records"]) == 200 and r.get("nextRecordsUrl"),
          "first page {} records, done {}".format(len(r["records"]), r["done"]))
    ids = [x["Id"] for x in r["records"]]
    while not r["done"]:
        r = sf.query_more(r["nextRecordsUrl"], identifier_is_url=True, headers=hdr)
        ids += [x["Id"] for x in r["records"]]
    check(len(ids) == S["contacts"] == len(set(ids)), "{} ids over the pages, {} contacts".format(len(ids), S["contacts"]))
    # by the locator alone (not the URL)
    r = sf.query("SELECT Id FROM Contact", headers=hdr)
    loc = r["nextRecordsUrl"].rsplit("/", 1)[1]
    r2 = sf.query_more(loc, headers=hdr)
    check(len(r2["records"]) > 0, "query_more by locator")


@F.flow("query_all_iter")
def _():
    ids = [x["Id"] for x in sf.query_all_iter("SELECT Id FROM Contact", headers={"Sforce-Query-Options": "batchSize=200"})]
    check(len(ids) == S["contacts"], "query_all_iter {} of {}".format(len(ids), S["contacts"]))
    r = sf.query_all("SELECT Id, Name FROM Account")
    check(r["done"] and r["totalSize"] == len(r["records"]) > 0, "query_all {}".format(r["totalSize"]))
    r = sf.query_all("SELECT Id FROM Contact", include_deleted=True)  # queryAll
    check(r["totalSize"] >= S["contacts"], "queryAll {}".format(r["totalSize"]))


@F.flow("relationship_query")
def _():
    r = sf.query_all("SELECT Id, Name, Account.Name, Account.Owner.Email FROM Contact WHERE Account.Name != null "
                     "ORDER BY Account.Name, Id LIMIT 50")
    check(r["records"], "no contacts with accounts")
    names = [x["Account"]["Name"] for x in r["records"]]
    check(names == sorted(names, key=str.lower) or names == sorted(names), "not ordered by Account.Name: {}".format(names[:5]))
    check(r["records"][0]["Account"]["attributes"]["type"] == "Account", "parent record {}".format(r["records"][0]))
    name = names[0]
    r2 = sf.query_all("SELECT Id FROM Contact WHERE Account.Name = '{}'".format(name.replace("'", "\\'")))
    check(r2["totalSize"] >= 1, "WHERE Account.Name = {!r}".format(name))
    r3 = sf.query("SELECT Id, Name, (SELECT Id, Email FROM Contacts) FROM Account LIMIT 3")
    check(all("Contacts" in a for a in r3["records"]), "child subquery {}".format(r3["records"][:1]))


@F.flow("semi_join_query")
def _():
    q = ("SELECT Id, ContactId, OpportunityId, Opportunity.LastModifiedDate FROM OpportunityContactRole "
         "WHERE ContactId IN (SELECT Id FROM Contact) ORDER BY Opportunity.LastModifiedDate DESC")
    r = sf.query_all(q)
    check(r["totalSize"] > 0, "no contact roles")
    dates = [x["Opportunity"]["LastModifiedDate"] for x in r["records"]]
    check(dates == sorted(dates, reverse=True), "not ordered by Opportunity.LastModifiedDate DESC")
    anti = sf.query_all("SELECT Id FROM Contact WHERE Id NOT IN (SELECT ContactId FROM OpportunityContactRole)")
    check(anti["totalSize"] + len({x["ContactId"] for x in r["records"]}) == S["contacts"],
          "semi {} + anti {} != {} contacts".format(len({x["ContactId"] for x in r["records"]}), anti["totalSize"], S["contacts"]))
    try:
        sf.query("SELECT Id FROM Contact WHERE Id IN (SELECT Email FROM Lead)")
    except SalesforceMalformedRequest:
        pass
    else:
        raise AssertionError("a semi-join over a non-id field was accepted")


@F.flow("upsert_by_external_id")
def _():
    ext = "ci-" + RUN
    owner = sf.query("SELECT Id FROM User LIMIT 1")["records"][0]["Id"]
    body = {"Subject": "CI call", "Status": "Completed", "Priority": "Normal", "OwnerId": owner,
            "WhoId": S["contact"]["Id"]}
    status = sf.Task.upsert("Salesync_Activity_Id__c/" + ext, body)
    check(status == 201, "first upsert (create) status {}".format(status))
    status = sf.Task.upsert("Salesync_Activity_Id__c/" + ext, {"Subject": "CI call, again"})
    check(status == 204, "second upsert (update) status {}".format(status))
    got = sf.Task.get_by_custom_id("Salesync_Activity_Id__c", ext)
    check(got["Subject"] == "CI call, again" and got["WhoId"] == S["contact"]["Id"], "read back {}".format(got))
    r = sf.query("SELECT Id FROM Task WHERE Salesync_Activity_Id__c = '{}'".format(ext))
    check(r["totalSize"] == 1, "{} tasks with the external id".format(r["totalSize"]))


@F.flow("describe")
def _():
    g = sf.describe()
    names = {o["name"] for o in g["sobjects"]}
    check({"Account", "Contact", "Lead", "Opportunity", "OpportunityContactRole", "Task", "User"} <= names,
          "global describe {}".format(sorted(names)))
    d = sf.Task.describe()
    fields = {f["name"]: f for f in d["fields"]}
    check("Salesync_Activity_Id__c" in fields and fields["Salesync_Activity_Id__c"]["externalId"] is True,
          "Task external id field {}".format(fields.get("Salesync_Activity_Id__c")))
    m = sf.Contact.metadata()
    check(m["objectDescribe"]["name"] == "Contact", "metadata {}".format(m))


@F.flow("composite_sobjects_via_restful")
def _():
    body = {"allOrNone": False, "records": [
        {"attributes": {"type": "Contact"}, "LastName": "CI batch 1 " + RUN},
        {"attributes": {"type": "Contact"}, "LastName": "CI batch 2 " + RUN},
        {"attributes": {"type": "Contact"}},  # LastName missing: fails alone
    ]}
    r = sf.restful("composite/sobjects", method="POST", json=body)
    check([x["success"] for x in r] == [True, True, False], "create collection {}".format(r))
    check(r[2]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING", "error {}".format(r[2]))
    ids = [x["id"] for x in r[:2]]
    got = sf.restful("composite/sobjects/Contact", method="GET", params={"ids": ",".join(ids), "fields": "Id,LastName"})
    check([x["Id"] for x in got] == ids, "retrieve collection {}".format(got))
    r = sf.restful("composite/sobjects", method="DELETE", params={"ids": ",".join(ids), "allOrNone": "false"})
    check(all(x["success"] for x in r), "delete collection {}".format(r))


@F.flow("aggregate_group_by_query")
def _():
    total = sf.query("SELECT COUNT() FROM Contact")["totalSize"]
    r = sf.query("SELECT LeadSource, COUNT(Id) n, COUNT(Email), MAX(LastModifiedDate) FROM Contact GROUP BY LeadSource")
    recs = r["records"]
    check(r["done"] is True and "nextRecordsUrl" not in r and r["totalSize"] == len(recs) > 0, "answer {}".format(r))
    check(all(x["attributes"] == {"type": "AggregateResult"} for x in recs), "attributes {}".format(recs[:1]))
    check(all({"LeadSource", "n", "expr0", "expr1"} <= set(x) for x in recs), "columns {}".format(recs[:1]))
    check(sum(x["n"] for x in recs) == total, "groups add up to {} of {} contacts".format(sum(x["n"] for x in recs), total))
    check(all(isinstance(x["n"], int) and x["expr0"] <= x["n"] for x in recs), "counts {}".format(recs[:3]))
    g = max(recs, key=lambda x: x["n"])
    where = "LeadSource = null" if g["LeadSource"] is None else "LeadSource = '{}'".format(g["LeadSource"].replace("'", "\\'"))
    one = sf.query("SELECT COUNT() FROM Contact WHERE " + where)["totalSize"]
    check(one == g["n"], "group {!r}: {} in the group, {} by COUNT()".format(g["LeadSource"], g["n"], one))
    big = sf.query("SELECT LeadSource, COUNT(Id) FROM Contact GROUP BY LeadSource HAVING COUNT(Id) > 1 ORDER BY COUNT(Id) DESC")
    counts = [x["expr0"] for x in big["records"]]
    check(counts == sorted(counts, reverse=True) and all(c > 1 for c in counts), "HAVING / ORDER BY {}".format(counts))
    try:
        sf.query("SELECT LeadSource, Email, COUNT(Id) FROM Contact GROUP BY LeadSource")
    except SalesforceMalformedRequest as e:
        check(e.content[0]["errorCode"] == "MALFORMED_QUERY", "error {}".format(e.content))
    else:
        raise AssertionError("a field neither grouped nor aggregated was accepted")


@F.flow("date_literal_query")
def _():
    name = "CI dates " + RUN
    cid = sf.Contact.create({"LastName": name})["id"]
    q = "SELECT Id FROM Contact WHERE LastName = '{}' AND CreatedDate = {}"
    for lit in ["TODAY", "THIS_WEEK", "THIS_MONTH", "THIS_QUARTER", "THIS_YEAR", "LAST_N_DAYS:1", "LAST_90_DAYS"]:
        r = sf.query(q.format(name, lit))
        check([x["Id"] for x in r["records"]] == [cid], "{}: {}".format(lit, r["records"]))
    for lit in ["LAST_WEEK", "NEXT_WEEK", "LAST_MONTH", "LAST_YEAR", "N_DAYS_AGO:2", "LAST_N_WEEKS:4", "NEXT_N_MONTHS:2"]:
        r = sf.query(q.format(name, lit))
        check(r["totalSize"] == 0, "{} matched the contact created now".format(lit))
    # A date field splits into before / in / after any literal's range.
    parts = [sf.query("SELECT COUNT() FROM Opportunity WHERE CloseDate {} THIS_YEAR".format(op))["totalSize"]
             for op in ("<", "=", ">")]
    every = sf.query("SELECT COUNT() FROM Opportunity")["totalSize"]
    check(sum(parts) == every > 0, "CloseDate before/in/after THIS_YEAR {} of {}".format(parts, every))
    try:
        sf.query("SELECT Id FROM Contact WHERE CreatedDate = THIS_DECADE")
    except SalesforceMalformedRequest:
        pass
    else:
        raise AssertionError("an unknown date literal was accepted")
    sf.Contact.delete(cid)


@F.flow("composite_request_via_restful")
def _():
    v = "/services/data/v{}".format(sf.sf_version)
    body = {"allOrNone": True, "compositeRequest": [
        {"method": "POST", "url": v + "/sobjects/Account", "referenceId": "NewAccount",
         "body": {"Name": "CI composite " + RUN}},
        {"method": "POST", "url": v + "/sobjects/Contact", "referenceId": "NewContact",
         "body": {"LastName": "CI composite " + RUN, "AccountId": "@{NewAccount.id}"}},
        {"method": "GET", "referenceId": "ByAccount",
         # the reference stays literal in the URL (Salesforce resolves @{...} before decoding it)
         "url": v + "/query?q=" + urllib.parse.quote("SELECT Id, AccountId FROM Contact WHERE AccountId = '@{NewAccount.id}'",
                                                     safe="@{}.'")},
        {"method": "PATCH", "url": v + "/sobjects/Contact/@{ByAccount.records[0].Id}", "referenceId": "Title",
         "body": {"Title": "Composite"}},
    ]}
    r = sf.restful("composite", method="POST", json=body)["compositeResponse"]
    check([x["httpStatusCode"] for x in r] == [201, 201, 200, 204], "statuses {}".format(r))
    check([x["referenceId"] for x in r] == ["NewAccount", "NewContact", "ByAccount", "Title"], "referenceIds {}".format(r))
    acct, contact = r[0]["body"]["id"], r[1]["body"]["id"]
    check(r[2]["body"]["records"][0]["Id"] == contact, "query by reference {}".format(r[2]["body"]))
    got = sf.Contact.get(contact)
    check(got["AccountId"] == acct and got["Title"] == "Composite", "contact {}".format(got))
    # allOrNone: one failure rolls the series back and halts the others.
    body = {"allOrNone": True, "compositeRequest": [
        {"method": "POST", "url": v + "/sobjects/Account", "referenceId": "A", "body": {"Name": "CI rolled back " + RUN}},
        {"method": "POST", "url": v + "/sobjects/Contact", "referenceId": "C", "body": {"AccountId": "@{A.id}"}},
    ]}
    r = sf.restful("composite", method="POST", json=body)["compositeResponse"]
    check(r[0]["httpStatusCode"] == 400 and r[0]["body"][0]["errorCode"] == "PROCESSING_HALTED", "halted {}".format(r[0]))
    check(r[1]["body"][0]["errorCode"] == "REQUIRED_FIELD_MISSING", "failure {}".format(r[1]))
    left = sf.query("SELECT COUNT() FROM Account WHERE Name = 'CI rolled back {}'".format(RUN))["totalSize"]
    check(left == 0, "{} rolled-back accounts remain".format(left))


@F.flow("composite_batch_via_restful")
def _():
    v = "v{}".format(sf.sf_version)
    acct = sf.Account.create({"Name": "CI batch " + RUN})["id"]
    body = {"haltOnError": False, "batchRequests": [
        {"method": "PATCH", "url": v + "/sobjects/Account/" + acct, "richInput": {"Name": "CI batch renamed " + RUN}},
        {"method": "GET", "url": v + "/sobjects/Account/" + acct + "?fields=Name"},
        {"method": "GET", "url": v + "/query?q=" + urllib.parse.quote("SELECT COUNT() FROM Account WHERE Id = '{}'".format(acct))},
        {"method": "GET", "url": v + "/sobjects/Account/001000000000000AAA"},
    ]}
    before = sf.limits()["DailyApiRequests"]["Remaining"]
    r = sf.restful("composite/batch", method="POST", json=body)
    check(r["hasErrors"] is True, "hasErrors {}".format(r))
    check([x["statusCode"] for x in r["results"]] == [204, 200, 200, 404], "statuses {}".format(r["results"]))
    check(r["results"][1]["result"]["Name"] == "CI batch renamed " + RUN, "read back {}".format(r["results"][1]))
    check(r["results"][2]["result"]["totalSize"] == 1, "query {}".format(r["results"][2]))
    after = sf.limits()["DailyApiRequests"]["Remaining"]
    # the batch's four subrequests and the second limits call
    check(before - after == 5, "the batch used {} calls".format(before - after - 1))
    sf.Account.delete(acct)


@F.flow("limits")
def _():
    r = sf.limits()
    check(r["DailyApiRequests"]["Max"] > 0 and r["DailyApiRequests"]["Remaining"] <= r["DailyApiRequests"]["Max"],
          "limits {}".format(r.get("DailyApiRequests")))
    check(sf.api_usage.get("api-usage") is not None, "no Sforce-Limit-Info usage parsed")


@F.flow("bulk2_query")
def _():
    contacts = sf.query("SELECT COUNT() FROM Contact")["totalSize"]
    rows = []
    for page in sf.bulk2.Contact.query("SELECT Id, Email FROM Contact", max_records=200, wait=1):
        rows += list(csv.DictReader(io.StringIO(page)))
    check(len(rows) == contacts, "bulk2 query {} rows, {} contacts".format(len(rows), contacts))
    check(set(rows[0]) == {"Id", "Email"}, "columns {}".format(list(rows[0])))


@F.flow("bulk2_insert")
def _():
    data = [{"LastName": "CI bulk {} {}".format(RUN, i), "Email": "bulk{}-{}@clients.example.com".format(i, RUN)}
            for i in range(5)] + [{"LastName": "", "Email": "nolastname-{}@clients.example.com".format(RUN)}]
    res = sf.bulk2.Contact.insert(records=data, wait=1)
    check(res and res[0]["numberRecordsProcessed"] == 6 and res[0]["numberRecordsFailed"] == 1, "insert {}".format(res))
    job = res[0]["job_id"]
    ok = list(csv.DictReader(io.StringIO(sf.bulk2.Contact.get_successful_records(job))))
    bad = list(csv.DictReader(io.StringIO(sf.bulk2.Contact.get_failed_records(job))))
    check(len(ok) == 5 and all(r["sf__Id"].startswith("003") for r in ok), "successful {}".format(ok))
    check(len(bad) == 1 and bad[0]["sf__Error"], "failed {}".format(bad))
    r = sf.query("SELECT COUNT() FROM Contact WHERE LastName LIKE 'CI bulk {}%'".format(RUN))
    check(r["totalSize"] == 5, "{} inserted contacts queried back".format(r["totalSize"]))


@F.flow("bulk2_upsert_and_delete")
def _():
    owner = sf.query("SELECT Id FROM User LIMIT 1")["records"][0]["Id"]
    who = S["contact"]["Id"]
    keys = ["bulk-{}-{}".format(RUN, i) for i in range(3)]
    data = [{"Salesync_Activity_Id__c": k, "Subject": "Bulk call " + k, "Status": "Completed", "Priority": "Normal",
             "OwnerId": owner, "WhoId": who} for k in keys]
    res = sf.bulk2.Task.upsert(records=data, external_id_field="Salesync_Activity_Id__c", wait=1)
    check(res[0]["numberRecordsProcessed"] == 3 and res[0]["numberRecordsFailed"] == 0, "first upsert {}".format(res))
    created = list(csv.DictReader(io.StringIO(sf.bulk2.Task.get_successful_records(res[0]["job_id"]))))
    check([r["sf__Created"] for r in created] == ["true"] * 3, "first upsert created {}".format(created))
    res = sf.bulk2.Task.upsert(records=[{"Salesync_Activity_Id__c": keys[0], "Subject": "Bulk call, again"}],
                               external_id_field="Salesync_Activity_Id__c", wait=1)
    again = list(csv.DictReader(io.StringIO(sf.bulk2.Task.get_successful_records(res[0]["job_id"]))))
    check(again[0]["sf__Created"] == "false" and again[0]["sf__Id"] == created[0]["sf__Id"], "second upsert {}".format(again))
    got = sf.Task.get_by_custom_id("Salesync_Activity_Id__c", keys[0])
    check(got["Subject"] == "Bulk call, again", "upserted task {}".format(got))
    res = sf.bulk2.Task.delete(records=[{"Id": r["sf__Id"]} for r in created], wait=1)
    check(res[0]["numberRecordsProcessed"] == 3 and res[0]["numberRecordsFailed"] == 0, "delete {}".format(res))
    left = sf.query("SELECT COUNT() FROM Task WHERE Salesync_Activity_Id__c LIKE 'bulk-{}-%'".format(RUN))
    check(left["totalSize"] == 0, "{} bulk-deleted tasks still queried".format(left["totalSize"]))
    rows = []
    for page in sf.bulk2.Task.query_all("SELECT Id, IsDeleted FROM Task WHERE Salesync_Activity_Id__c LIKE 'bulk-{}-%'".format(RUN),
                                        wait=1):
        rows += list(csv.DictReader(io.StringIO(page)))
    check(len(rows) == 3 and all(r["IsDeleted"] == "true" for r in rows), "bulk2 queryAll {}".format(rows))


@F.flow("updated_and_deleted")
def _():
    # getUpdated / getDeleted cover whole minutes only (latestDateCovered is the current minute's
    # start), as Salesforce does: wait for the minute of the writes above to be covered.
    covered = S["last_write"].replace(second=0, microsecond=0) + timedelta(minutes=1, seconds=1)
    wait = (covered - datetime.now(timezone.utc)).total_seconds()
    if wait > 0:
        print("  updated/deleted: waiting {:.0f} s for the minute of the writes to be covered".format(wait), flush=True)
        time.sleep(wait)
    end = datetime.now(timezone.utc) + timedelta(minutes=1)
    start = end - timedelta(days=1)
    up = sf.Contact.updated(start, end)
    check(S["updated_contact"] in up["ids"], "updated {} not in {}".format(S["updated_contact"], up))
    check(S["deleted_contact"] not in up["ids"], "a deleted record among the updated ids")
    de = sf.Contact.deleted(start, end)
    ids = [x["id"] for x in de["deletedRecords"]]
    check(S["deleted_contact"] in ids, "deleted {} not in {}".format(S["deleted_contact"], de))
    check("earliestDateAvailable" in de and "latestDateCovered" in de, "deleted {}".format(de))


F.run()
