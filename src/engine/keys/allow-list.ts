/**
 * A key's repository allow-list: `owner/name` entries and `owner/*` (any repository of that
 * owner). No list means any repository the server reaches. GitHub names are case-insensitive,
 * so matching is too.
 */
import * as z from "zod";
import { RepositoryFullName } from "../run/schema.ts";

const OWNER_WILDCARD = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})\/\*$/;

/** One entry: `owner/name` or `owner/*`. */
export const RepositoryPattern = z
  .string()
  .max(200)
  .refine((s) => OWNER_WILDCARD.test(s) || RepositoryFullName.safeParse(s).success, "must be owner/name or owner/*");
export type RepositoryPattern = z.infer<typeof RepositoryPattern>;

export const RepositoryAllowList = z
  .array(RepositoryPattern)
  .min(1, "at least one repository pattern is required (leave repos out to allow any)")
  .max(100);

/** True when `fullName` (`owner/name`) is covered by `allowed`; an absent list allows everything. */
export function repositoryAllowed(allowed: readonly string[] | undefined, fullName: string): boolean {
  if (allowed === undefined) return true;
  const [owner = "", name = ""] = fullName.toLowerCase().split("/");
  return allowed.some((pattern) => {
    const [pOwner, pName] = pattern.toLowerCase().split("/");
    return pOwner === owner && (pName === "*" || pName === name);
  });
}
