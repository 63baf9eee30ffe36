-- Up Migration
-- Fencing (leases.ts): a run's lease epoch grows each time its lease changes hands, and the
-- replica that leased a run writes only while the epoch is still the one it was given. A
-- replica that stalled past its lease finds, on waking, that its writes for the run are refused.
ALTER TABLE runs ADD COLUMN lease_epoch bigint NOT NULL DEFAULT 0;

-- Down Migration
ALTER TABLE runs DROP COLUMN lease_epoch;
