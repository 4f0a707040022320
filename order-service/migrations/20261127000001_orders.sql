-- Orders and their lines. Money is integer minor units of the order's currency.
CREATE TABLE orders (
    id          uuid        PRIMARY KEY,
    customer_id text        NOT NULL,
    currency    text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    total_minor bigint      NOT NULL CHECK (total_minor >= 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- Listing is oldest first by (created_at, id): ids are not time-ordered in
-- every mode (self-read derives them from the Idempotency-Key).
CREATE INDEX orders_created_at_id_idx ON orders (created_at, id);
CREATE INDEX orders_customer_id_created_at_id_idx ON orders (customer_id, created_at, id);

CREATE TABLE order_lines (
    order_id         uuid   NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no          int    NOT NULL,
    sku              text   NOT NULL,
    quantity         bigint NOT NULL CHECK (quantity > 0),
    unit_price_minor bigint NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (order_id, line_no)
);

-- One row per Idempotency-Key seen on POST /orders. The key is claimed first in
-- the order's transaction (the foreign key is checked at COMMIT), so a retry
-- waits for the first attempt and then finds its order.
CREATE TABLE idempotency_keys (
    key          text        PRIMARY KEY,
    request_hash bytea       NOT NULL,
    order_id     uuid        NOT NULL REFERENCES orders (id) DEFERRABLE INITIALLY DEFERRED,
    created_at   timestamptz NOT NULL DEFAULT now()
);
