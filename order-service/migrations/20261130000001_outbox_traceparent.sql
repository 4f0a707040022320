-- The W3C trace context of the request that wrote the row: the relay's
-- publish span continues that trace, and the consumers continue the relay's.
ALTER TABLE outbox ADD COLUMN traceparent text;
