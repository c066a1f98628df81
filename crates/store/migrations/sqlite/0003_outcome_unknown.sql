-- Whether an earlier delivery attempt of an outbox item may have reached its target (the
-- exactly-once rule's "look before sending again"), as a column instead of a mark inside
-- `last_error`. Items written before this migration carried the mark in their error text.

ALTER TABLE outbox ADD COLUMN outcome_unknown BOOLEAN NOT NULL DEFAULT FALSE;

UPDATE outbox SET outcome_unknown = TRUE WHERE last_error LIKE '%outcome unknown: %';
