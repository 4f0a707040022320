-- Cancellations the self-read projector took before their order's
-- `OrderPlaced`. A cancellation is never applied to an order the history does
-- not have, and never dropped: it waits here, one per order, until the
-- placement inserts the order already cancelled (and deletes it here).
-- Counted at each scrape (`order_events_cancellations_awaiting_order`).
CREATE TABLE cancellations_awaiting_order (
    order_id     uuid        PRIMARY KEY,
    -- The `OrderCancelled` that brought it.
    event_id     uuid        NOT NULL,
    cancelled_at timestamptz NOT NULL,
    reason       text        CHECK (char_length(reason) <= 200),
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
