import { EventEmitter } from 'node:events';

/**
 * What changed, so bundle caches can be dropped precisely. The one interface long polls depend on:
 * with several server replicas (PostgreSQL backend, planned) it would be fed by LISTEN/NOTIFY instead
 * of this in-process emitter, and nothing else would change.
 */
export type Change =
  | { kind: 'keystore'; keystore: string }
  | { kind: 'enclave'; keystore: string; enclave: string }
  | { kind: 'robot'; robot: string }
  /** A binding came or went: for one robot, for robots matching a selector, or (no scope) for anyone. */
  | { kind: 'bindings'; robot?: string; selector?: Record<string, string> }
  /** Changes were missed (a follower away longer than the change log keeps them): drop every cache. */
  | { kind: 'resync' };

export class ChangeFeed {
  private readonly emitter = new EventEmitter();
  constructor() {
    // Every waiting robot does not subscribe here (the bundle service does, once): keep the default cap.
    this.emitter.setMaxListeners(50);
  }
  publish(change: Change): void {
    this.emitter.emit('change', change);
  }
  subscribe(listener: (change: Change) => void): () => void {
    this.emitter.on('change', listener);
    return () => this.emitter.off('change', listener);
  }
}
