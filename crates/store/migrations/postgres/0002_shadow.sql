-- The shadow copy of the mirror that a rebuild fills while hosts keep reading the live one
-- (see ShadowStore): people rows exactly like `people`, and the rebuild's own stream checkpoints.

CREATE TABLE shadow_people (
    marketo_id            BIGINT PRIMARY KEY CHECK (marketo_id > 0),
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
    marketo_updated_at    TIMESTAMPTZ,
    mirror_updated_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX shadow_people_salesforce_lead ON shadow_people (salesforce_lead_id) WHERE salesforce_lead_id IS NOT NULL;
CREATE INDEX shadow_people_salesforce_contact ON shadow_people (salesforce_contact_id)
    WHERE salesforce_contact_id IS NOT NULL;

CREATE TABLE shadow_checkpoints (
    stream     TEXT PRIMARY KEY NOT NULL,
    position   JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
