-- Up Migration
-- MCP sessions over Streamable HTTP (src/mcp/session-records.ts), so any replica can serve a
-- session another opened: what `initialize` settled, the key, and the calls still to answer.
CREATE TABLE mcp_sessions (id text PRIMARY KEY, data json NOT NULL);

-- Down Migration
DROP TABLE mcp_sessions;
