-- Up Migration
-- The MCP event log when replicas share the database (pg/mcp-events.ts, mcp/shared-event-store.ts):
-- every SSE frame of a Streamable HTTP stream, written before it is sent, so a client cut off
-- from one replica resumes on any other with Last-Event-ID. A stream is written by one session
-- view (`writer`, NULL once that view closed) on one replica; its frames are numbered 1..n under
-- its row's lock, held to commit, so they commit in order.
CREATE TABLE mcp_streams (
  key text COLLATE "C" PRIMARY KEY,
  session_id text NOT NULL,
  stream_id text NOT NULL,
  request_ids json NOT NULL,
  replica text NOT NULL,
  writer text,
  last_seq bigint NOT NULL,
  -- Frames up to here were dropped for the bounds: a cursor below it cannot be resumed.
  dropped_through bigint NOT NULL DEFAULT 0,
  written_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mcp_streams_session ON mcp_streams (session_id);
CREATE INDEX mcp_streams_writer ON mcp_streams (writer) WHERE writer IS NOT NULL;
CREATE INDEX mcp_streams_written ON mcp_streams (written_at);

CREATE TABLE mcp_events (
  stream_key text COLLATE "C" NOT NULL REFERENCES mcp_streams (key) ON DELETE CASCADE,
  seq bigint NOT NULL,
  -- Age across streams, for dropping the oldest frames first.
  n bigserial NOT NULL,
  message json NOT NULL,
  -- The JSON-RPC request id a response frame answers (JSON text, so 1 and "1" differ).
  answers text,
  bytes integer NOT NULL,
  PRIMARY KEY (stream_key, seq)
);
-- One answer per request on a stream, whichever replica writes it.
CREATE UNIQUE INDEX mcp_events_answer ON mcp_events (stream_key, answers) WHERE answers IS NOT NULL;

-- Down Migration
DROP TABLE mcp_events, mcp_streams;
