-- Up Migration
-- What replicas share beyond the store: request-rate counters, the replicas themselves (where
-- to hand a run's follow-up to), each run's lease (which replica runs its session, until
-- when), and the input of runs queued until a replica has room for them.

CREATE TABLE rate_counters (
  key text PRIMARY KEY,
  hits integer NOT NULL,
  reset_at timestamptz NOT NULL
);

CREATE TABLE replicas (
  id text PRIMARY KEY,
  url text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE runs ADD COLUMN lease_owner text, ADD COLUMN lease_until timestamptz;
CREATE INDEX runs_lease_owner ON runs (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX runs_queued ON runs (created_at, id) WHERE status = 'queued';

-- A queued run's first turn (its CreateRunInput), until a replica takes it.
CREATE TABLE run_queue (
  run_id text COLLATE "C" PRIMARY KEY,
  queued_at timestamptz NOT NULL DEFAULT now(),
  input json NOT NULL
);

-- Down Migration
DROP TABLE run_queue;
DROP INDEX runs_queued;
DROP INDEX runs_lease_owner;
ALTER TABLE runs DROP COLUMN lease_until, DROP COLUMN lease_owner;
DROP TABLE replicas;
DROP TABLE rate_counters;
