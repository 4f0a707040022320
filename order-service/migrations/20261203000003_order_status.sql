-- Where an order is in its life: placed, then possibly cancelled, once.
-- `cancelled_at` is set exactly when the order is cancelled; the reason is the
-- customer's, at most 200 characters, as `OrderCancelled` carries it.
ALTER TABLE orders
    ADD COLUMN status text NOT NULL DEFAULT 'placed' CHECK (status IN ('placed', 'cancelled')),
    ADD COLUMN cancelled_at timestamptz,
    ADD COLUMN cancel_reason text CHECK (char_length(cancel_reason) <= 200),
    ADD CONSTRAINT orders_cancelled_at_iff_cancelled
        CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL));
