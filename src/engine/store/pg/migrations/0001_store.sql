-- Up Migration
-- The RunStore (store/store.ts) in Postgres: each record as json (checked by its zod schema
-- before it is written), with the columns the store's queries filter and sort on beside it.
-- json, not jsonb: records are only read whole, and json keeps any text an agent wrote (jsonb refuses
-- the NUL character).
-- Text that sorts (created_at, ids) is COLLATE "C": code-unit order, as the embedded store.

CREATE TABLE runs (
  id text COLLATE "C" PRIMARY KEY,
  owner_id text NOT NULL,
  status text NOT NULL,
  created_at text COLLATE "C" NOT NULL,
  idempotency_key text,
  data json NOT NULL
);
-- listRuns: an owner's runs newest first, a page after a (created_at, id) cursor.
CREATE INDEX runs_owner_newest ON runs (owner_id, created_at DESC, id DESC);
CREATE INDEX runs_status ON runs (status);
CREATE INDEX runs_owner_idempotency ON runs (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- The next event id of each run: its row lock orders concurrent appends from every replica,
-- so ids are 1..n with no gap and commit in id order.
CREATE TABLE run_event_heads (
  run_id text COLLATE "C" PRIMARY KEY,
  last_id bigint NOT NULL
);
-- The primary key is the index `readEvents(run, after)` walks.
CREATE TABLE run_events (
  run_id text COLLATE "C" NOT NULL,
  id bigint NOT NULL,
  data json NOT NULL,
  PRIMARY KEY (run_id, id)
);

CREATE TABLE turns (
  run_id text COLLATE "C" NOT NULL,
  n integer NOT NULL,
  data json NOT NULL,
  PRIMARY KEY (run_id, n)
);

CREATE TABLE run_groups (id text PRIMARY KEY, data json NOT NULL);

-- Patches and summaries as json strings: json (unlike jsonb and text) keeps any character, NUL too.
CREATE TABLE patches (run_id text PRIMARY KEY, data json NOT NULL);
CREATE TABLE summaries (run_id text PRIMARY KEY, data json NOT NULL);

CREATE TABLE api_keys (id text PRIMARY KEY, hash text NOT NULL UNIQUE, seq bigserial, data json NOT NULL);
CREATE TABLE repositories (id text PRIMARY KEY, name_lower text NOT NULL, data json NOT NULL);
CREATE INDEX repositories_name ON repositories (name_lower);

CREATE TABLE run_secrets (run_id text NOT NULL, name text NOT NULL, data json NOT NULL, PRIMARY KEY (run_id, name));
CREATE TABLE owner_secrets (owner_id text NOT NULL, name text NOT NULL, data json NOT NULL, PRIMARY KEY (owner_id, name));
CREATE TABLE owner_budgets (owner_id text PRIMARY KEY, data json NOT NULL);

CREATE TABLE webhooks (id text PRIMARY KEY, owner_id text NOT NULL, seq bigserial, data json NOT NULL);
CREATE INDEX webhooks_owner ON webhooks (owner_id, seq);
CREATE TABLE deliveries (
  id text COLLATE "C" PRIMARY KEY,
  run_id text COLLATE "C" NOT NULL,
  seq integer NOT NULL,
  status text NOT NULL,
  data json NOT NULL
);
CREATE INDEX deliveries_run ON deliveries (run_id, seq, id);
CREATE INDEX deliveries_pending ON deliveries (run_id, seq, id) WHERE status = 'pending';

-- Down Migration
DROP TABLE deliveries, webhooks, owner_budgets, owner_secrets, run_secrets, repositories, api_keys,
  summaries, patches, run_groups, turns, run_events, run_event_heads, runs;
