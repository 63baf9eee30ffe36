-- Up Migration
-- runsUpdatedSince (webhooks' reconcile at start): runs by their last update.
CREATE INDEX runs_updated_at ON runs (((data->>'updatedAt')::text) COLLATE "C");

-- Down Migration
DROP INDEX runs_updated_at;
