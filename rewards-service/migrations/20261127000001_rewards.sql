-- One row per customer with the running balance.
CREATE TABLE reward_accounts (
    customer_id text        PRIMARY KEY,
    balance     bigint      NOT NULL CHECK (balance >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per credited order. This table is also the consumer's inbox:
-- event_id as primary key drops a redelivered message, and order_id UNIQUE
-- drops the same order arriving under another event id (a replay).
CREATE TABLE reward_ledger (
    event_id          uuid        PRIMARY KEY,
    order_id          uuid        NOT NULL UNIQUE,
    customer_id       text        NOT NULL,
    points            bigint      NOT NULL CHECK (points >= 0),
    order_total_minor bigint      NOT NULL,
    currency          text        NOT NULL,
    order_placed_at   timestamptz NOT NULL,
    stream_sequence   bigint      NOT NULL,
    credited_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reward_ledger_customer_id_idx ON reward_ledger (customer_id, credited_at);
