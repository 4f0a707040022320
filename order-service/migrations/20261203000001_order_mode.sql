-- The mode order-service runs in (with its relay: `outbox`, `outbox-cdc`,
-- `cdc`, `self-read`, `dual-write`). An instance that starts in another mode
-- writes it here before it drains what the previous mode left; every write
-- of an order checks it in its own statement, under a key-share lock that
-- the switch's update waits for, so an instance still running in the old
-- mode cannot commit an order that nothing would publish.
CREATE TABLE order_mode (
    mode        text PRIMARY KEY,
    switched_at timestamptz NOT NULL DEFAULT now()
);
-- One row at most.
CREATE UNIQUE INDEX order_mode_one_row ON order_mode ((true));
