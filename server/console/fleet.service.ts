import type { Labels } from '../acl/acl.js';
import type { Caller } from '../acl/caller.js';
import type { BundlesService } from '../bundles/bundles.service.js';
import type { Store } from '../store/store.js';

/** Bundle revisions looked up at once: cache hits cost nothing, and misses are built a few at a time. */
const REVISION_BATCH = 16;

/**
 * Where a robot stands: `silent` (its agent has not been heard of for longer than the threshold) wins over
 * `behind` (it last reported another revision than the one it would receive now), because a silent robot's
 * revision says nothing about what it holds today.
 */
export const FLEET_STATES = ['up-to-date', 'behind', 'silent', 'never-reported', 'not-enrolled'] as const;
export type FleetState = (typeof FLEET_STATES)[number];

export interface FleetRobot {
  name: string;
  labels: Labels;
  enrolled: boolean;
  enrolledAt: string | null;
  agentVersion: string | null;
  createdAt: string;
  lastSeenAt: string | null;
  reportedAt: string | null;
  clockSkewMs: number | null;
  filesystem: string | null;
  /** The revision the agent last reported holding. */
  heldRevision: string | null;
  /** The revision the robot would receive now (null while it is not enrolled: it can fetch nothing). */
  currentRevision: string | null;
  state: FleetState;
}

export interface FleetSummary {
  generatedAt: string;
  silentMinutes: number;
  counts: Record<FleetState, number>;
  robots: FleetRobot[];
}

/**
 * The fleet as an operator asks about it: one row per robot the caller may see (the same filter as
 * `GET /v1/robots`), joined with its agent's last report and the revision its bundle has now.
 */
export class FleetService {
  constructor(
    private readonly store: Store,
    private readonly bundles: BundlesService,
    private readonly now: () => Date,
  ) {}

  async summary(caller: Caller, silentMinutes: number): Promise<FleetSummary> {
    const now = this.now();
    const silentBefore = now.getTime() - silentMinutes * 60_000;
    const counts = Object.fromEntries(FLEET_STATES.map((s) => [s, 0])) as Record<FleetState, number>;
    const { reports, list } = await this.store.read(async (r) => ({ reports: await r.robots.reports(), list: await r.robots.list() }));
    const visible = list.filter((r) => caller.robotVisible(r.labels));
    const revisions = new Map<string, string>();
    const enrolledNames = visible.filter((r) => r.keyId !== null).map((r) => r.name);
    for (let i = 0; i < enrolledNames.length; i += REVISION_BATCH) {
      const batch = enrolledNames.slice(i, i + REVISION_BATCH);
      const entries = await Promise.all(batch.map((name) => this.bundles.current(name)));
      entries.forEach((e) => revisions.set(e.robot, e.revision));
    }
    const robots = visible
      .map((r): FleetRobot => {
        const report = reports.get(r.name) ?? null;
        const enrolled = r.keyId !== null;
        const currentRevision = enrolled ? revisions.get(r.name)! : null;
        const state: FleetState = !enrolled
          ? 'not-enrolled'
          : !report
            ? 'never-reported'
            : Date.parse(report.lastSeenAt) < silentBefore
              ? 'silent'
              : report.revision === currentRevision
                ? 'up-to-date'
                : 'behind';
        counts[state]++;
        return {
          name: r.name,
          labels: r.labels,
          enrolled,
          enrolledAt: r.enrolledAt,
          agentVersion: report?.agentVersion ?? r.agentVersion,
          createdAt: r.createdAt,
          lastSeenAt: report?.lastSeenAt ?? null,
          reportedAt: report?.reportedAt ?? null,
          clockSkewMs: report?.clockSkewMs ?? null,
          filesystem: report?.filesystem ?? null,
          heldRevision: report?.revision ?? null,
          currentRevision,
          state,
        };
      });
    return { generatedAt: now.toISOString(), silentMinutes, counts, robots };
  }
}
