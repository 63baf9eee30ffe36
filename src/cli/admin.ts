/** Admin commands on the local data dir: `keys create|list|revoke`, `owners limits`. */
import { parseArgs } from "node:util";
import type { Config } from "../config.ts";
import { createLogger, openPatchbay } from "../engine/index.ts";
import { UsageError } from "./errors.ts";

export async function keys(config: Config, args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  const pb = await openPatchbay(config, { log: createLogger({ level: config.logLevel ?? "warn" }) });
  try {
    if (sub === "create") {
      const { values } = parseArgs({
        args: rest,
        options: {
          name: { type: "string" },
          scopes: { type: "string" },
          owner: { type: "string" },
          repos: { type: "string" },
        },
      });
      if (!values.name) throw new UsageError("keys create needs --name");
      const scopes = (values.scopes ?? "read:builder,write:builder").split(",").map((s) => s.trim());
      for (const s of scopes)
        if (!["read:builder", "write:builder", "admin"].includes(s)) throw new UsageError(`unknown scope "${s}"`);
      const { key } = await pb.keys.create({
        name: values.name,
        scopes: scopes as ("read:builder" | "write:builder" | "admin")[],
        ...(values.owner ? { ownerId: values.owner } : {}),
        ...(values.repos !== undefined
          ? {
              repos: values.repos
                .split(",")
                .map((r) => r.trim())
                .filter(Boolean),
            }
          : {}),
      });
      process.stdout.write(key + "\n");
    } else if (sub === "list") {
      for (const k of await pb.keys.list()) {
        process.stdout.write(
          `${k.id}\t${k.name}\t${k.prefix}…\t${k.scopes.join(",")}\towner=${k.ownerId}\trepos=${k.repos?.join(",") ?? "*"}\t${k.revokedAt ? `revoked ${k.revokedAt}` : "active"}\n`,
        );
      }
    } else if (sub === "revoke") {
      const id = rest[0];
      if (!id) throw new UsageError("keys revoke needs an ID");
      await pb.keys.revoke(id);
      process.stderr.write(`revoked ${id}\n`);
    } else {
      throw new UsageError(`unknown keys command "${sub ?? ""}"`);
    }
  } finally {
    await pb.close();
  }
}

export async function owners(config: Config, args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  if (sub !== "limits") throw new UsageError(`unknown owners command "${sub ?? ""}"`);
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: { "daily-cost-usd": { type: "string" } },
  });
  const [owner] = positionals;
  if (!owner || positionals.length > 1) throw new UsageError("owners limits needs one OWNER");
  const cap = values["daily-cost-usd"];
  const dailyCostUsd = cap === undefined ? undefined : cap === "none" ? null : Number(cap);
  if (typeof dailyCostUsd === "number" && !Number.isFinite(dailyCostUsd))
    throw new UsageError(`--daily-cost-usd must be a number of US dollars or none, not "${cap}"`);
  const pb = await openPatchbay(config, { log: createLogger({ level: config.logLevel ?? "warn" }) });
  try {
    const limits =
      dailyCostUsd === undefined
        ? await pb.engine.ownerLimits(owner)
        : await pb.engine.setOwnerLimits(owner, { dailyCostUsd });
    process.stdout.write(
      `owner=${limits.ownerId}\tdailyCostUsd=${limits.dailyCostUsd ?? "none"}\tspent ${limits.day}=${limits.spentTodayUsd}\n`,
    );
  } finally {
    await pb.close();
  }
}
