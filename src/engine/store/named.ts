/**
 * Records kept by group and name (a run's secrets, an owner's secrets): the embedded store's
 * in-memory index for both. Maps, so no name can collide with Object.prototype.
 */
export class NamedRecords<T extends { name: string }> {
  private readonly groups = new Map<string, Map<string, T>>();

  constructor(
    records: readonly T[],
    private readonly groupOf: (record: T) => string,
  ) {
    for (const r of records) this.put(r);
  }

  put(record: T): void {
    const group = this.groupOf(record);
    let m = this.groups.get(group);
    if (!m) this.groups.set(group, (m = new Map()));
    m.set(record.name, record);
  }

  get(group: string, name: string): T | undefined {
    return this.groups.get(group)?.get(name);
  }

  /** The group's records, by name. */
  list(group: string): T[] {
    return [...(this.groups.get(group)?.values() ?? [])].sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Whether the record was there. */
  delete(group: string, name: string): boolean {
    const m = this.groups.get(group);
    if (!m?.delete(name)) return false;
    if (m.size === 0) this.groups.delete(group);
    return true;
  }

  /** Whether the group had any record. */
  deleteGroup(group: string): boolean {
    return this.groups.delete(group);
  }

  all(): T[] {
    return [...this.groups.values()].flatMap((m) => [...m.values()]);
  }
}
