/**
 * Work queued per key: each call for a key starts after the previous one for that key has
 * settled, whatever its outcome. A key is forgotten once its queue is empty, so the map does
 * not grow with every key ever used.
 */
export type SerialQueues = <T>(key: string, work: () => Promise<T>) => Promise<T>;

export function createSerialQueues(): SerialQueues {
  const tails = new Map<string, Promise<void>>();
  return (key, work) => {
    const previous = tails.get(key) ?? Promise.resolve();
    const result = previous.then(work, work);
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    tails.set(key, tail);
    void tail.then(() => {
      if (tails.get(key) === tail) tails.delete(key);
    });
    return result;
  };
}
