/**
 * Small json documents by id that every replica reads and writes (MCP session records): the
 * fronts keep their own shapes and checks, the database only keeps them shared.
 */
import type { Db } from "./db.ts";

export interface SharedDocuments {
  get(id: string): Promise<unknown>;
  put(id: string, doc: unknown): Promise<void>;
  delete(id: string): Promise<void>;
}

/** Documents in `table` (columns id, data json), a table of Patchbay's own migrations. */
export function createSharedDocuments(db: Db, table: "mcp_sessions"): SharedDocuments {
  return {
    get: (id) => db.one(`SELECT data FROM ${table} WHERE id = $1`, [id]),
    async put(id, doc) {
      await db.count(
        `INSERT INTO ${table} (id, data) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data`,
        [id, JSON.stringify(doc)],
      );
    },
    async delete(id) {
      await db.count(`DELETE FROM ${table} WHERE id = $1`, [id]);
    },
  };
}
