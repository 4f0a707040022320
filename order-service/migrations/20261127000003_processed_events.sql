-- Inbox of the self-read projector: one row per event it applied, written in
-- the transaction that applied it.
CREATE TABLE processed_events (
    event_id     uuid        PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
