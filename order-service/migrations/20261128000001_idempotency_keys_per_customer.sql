-- Idempotency keys are scoped per customer: two customers who happen to pick
-- the same key place two orders, and neither learns of the other's.
ALTER TABLE idempotency_keys ADD COLUMN customer_id text;
UPDATE idempotency_keys k SET customer_id = o.customer_id FROM orders o WHERE o.id = k.order_id;
ALTER TABLE idempotency_keys ALTER COLUMN customer_id SET NOT NULL;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (customer_id, key);
