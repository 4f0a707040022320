-- The relay is woken by the process that commits the order, no longer by a
-- NOTIFY at commit: NOTIFY takes a database-wide lock at COMMIT that
-- serialises every commit behind it, and capped the outbox's write rate at a
-- third of what the same statement reaches without it.
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS outbox_notify();
