-- salesync store schema, SQLite. Timestamps are INTEGER microseconds since the Unix epoch (UTC);
-- Salesforce ids are 18-character text; JSON is text.

CREATE TABLE salesync_meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE people (
    marketo_id            INTEGER PRIMARY KEY CHECK (marketo_id > 0),
    first_name            TEXT,
    last_name             TEXT,
    salesforce_contact_id TEXT,
    salesforce_lead_id    TEXT,
    salesforce_account_id TEXT,
    opportunity_source    TEXT NOT NULL,
    opportunity_id        TEXT,
    company               TEXT,
    title                 TEXT,
    email                 TEXT,
    phone                 TEXT,
    linkedin_url          TEXT,
    source                TEXT,
    salesforce_type       TEXT NOT NULL,
    owner_id              TEXT NOT NULL,
    marketo_updated_at    INTEGER,
    mirror_updated_at     INTEGER NOT NULL
);
CREATE INDEX people_email ON people (lower(email));
CREATE INDEX people_salesforce_lead ON people (salesforce_lead_id) WHERE salesforce_lead_id IS NOT NULL;
CREATE INDEX people_salesforce_contact ON people (salesforce_contact_id) WHERE salesforce_contact_id IS NOT NULL;
CREATE INDEX people_owner ON people (owner_id);

CREATE TABLE tombstones (
    marketo_id INTEGER PRIMARY KEY CHECK (marketo_id > 0),
    reason     TEXT NOT NULL,
    removed_at INTEGER NOT NULL
);

CREATE TABLE checkpoints (
    stream     TEXT PRIMARY KEY NOT NULL,
    position   TEXT NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    key             TEXT NOT NULL UNIQUE,
    target          TEXT NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    result          TEXT,
    lease_owner     TEXT,
    lease_until     INTEGER,
    created_at      INTEGER NOT NULL
);
-- Claims scan only live items, by id.
CREATE INDEX outbox_live ON outbox (target, id) WHERE state IN ('pending', 'in_flight');
CREATE INDEX outbox_state ON outbox (state, id);

CREATE TABLE reminders (
    id                 TEXT PRIMARY KEY NOT NULL,
    marketo_id         INTEGER NOT NULL,
    subject            TEXT NOT NULL,
    status             TEXT NOT NULL,
    priority           TEXT NOT NULL,
    due_date           TEXT,
    details            TEXT,
    salesforce_task_id TEXT,
    deleted            INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX reminders_person ON reminders (marketo_id);
CREATE INDEX reminders_salesforce_task ON reminders (salesforce_task_id) WHERE salesforce_task_id IS NOT NULL;

CREATE TABLE unsubscribes (
    marketo_id   INTEGER PRIMARY KEY,
    unsubscribed INTEGER NOT NULL,
    origin       TEXT NOT NULL,
    at           INTEGER NOT NULL
);

CREATE TABLE leases (
    name       TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
