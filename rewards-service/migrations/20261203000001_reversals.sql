-- An order's cancellation takes back the points of its credit: the ledger
-- holds one credit and at most one reversal per order, whatever their event
-- ids. event_id stays the primary key (a redelivered message), and
-- (order_id, kind) replaces order_id as the other key (the same order's
-- credit or reversal under another event id).
ALTER TABLE reward_ledger
    ADD COLUMN kind text NOT NULL DEFAULT 'credit'
        CONSTRAINT reward_ledger_kind_check CHECK (kind IN ('credit', 'reversal'));
-- A credit adds points, a reversal takes them back.
ALTER TABLE reward_ledger
    DROP CONSTRAINT reward_ledger_points_check,
    ADD CONSTRAINT reward_ledger_points_check
        CHECK (CASE kind WHEN 'credit' THEN points >= 0 ELSE points <= 0 END),
    DROP CONSTRAINT reward_ledger_order_id_key,
    ADD CONSTRAINT reward_ledger_order_id_kind_key UNIQUE (order_id, kind);

-- Cancellations that arrived before their order's credit (a redelivery, a
-- second instance, a partition, or a publisher that lost the placement):
-- recorded, acknowledged, and applied by the credit when it comes, in the
-- credit's own transaction, so that the balance nets to zero and never goes
-- below what was credited. The order id keys it: a second cancellation of
-- the order, under any event id, is a duplicate.
CREATE TABLE reversals_awaiting_credit (
    order_id          uuid        PRIMARY KEY,
    event_id          uuid        NOT NULL,
    customer_id       text        NOT NULL,
    -- The points the cancellation claims, by the rewards rule. The reversal
    -- takes back the credit's own, and only from a credit of the same
    -- customer, total and currency: one that disagrees is never applied.
    points            bigint      NOT NULL CHECK (points >= 0),
    order_total_minor bigint      NOT NULL CHECK (order_total_minor >= 0),
    currency          text        NOT NULL,
    cancelled_at      timestamptz NOT NULL,
    stream_sequence   bigint      NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now()
);
