-- Replication slots order-service created (or adopted), remembered in its own
-- database. A slot that vanished — a failover to a standby, a restore, a manual
-- drop — must not be silently recreated: a new slot starts at the current end
-- of the WAL and skips every change the old one had not confirmed. With this
-- row, start-up notices the loss and refuses until an operator resyncs.
CREATE TABLE cdc_slots (
    slot_name         text        PRIMARY KEY,
    -- What the slot captures: 'orders' (cdc mode) or 'outbox' (the CDC outbox relay).
    label             text        NOT NULL,
    publication       text        NOT NULL,
    created_lsn       pg_lsn      NOT NULL,
    -- pg_control_system().system_identifier of the server the slot was made on:
    -- a restored or re-initialised cluster has another one.
    system_identifier bigint      NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- Set once the slot was read to its end and published, before it is
    -- dropped: a drained slot that is gone was dropped on purpose.
    drained_at        timestamptz
);
