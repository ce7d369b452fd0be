/**
 * @module The sizes of each scenario in the three run profiles: `full` (the figures),
 * `quick` (under three minutes) and `tiny` (a few users, for the test that proves the harness).
 */

export interface Profile {
  name: "full" | "quick" | "tiny";
  /** Load-generator processes for the traffic scenarios. */
  loadgens: number;
  /** Most sockets one load generator holds in the socket-count scenarios. */
  socketsPerLoadgen: number;
  /** Longest a traffic run may take before it is cut and reported as timed out. */
  runDeadlineMs: number;
  direct: { users: number; messages: number; windows: number[]; warmupPerSender: number };
  /** `warmupMs`: the same load before the measured run, whose figures are reported apart. */
  latency: {
    users: number;
    msgsPerSec: number;
    warmupMs: number;
    durationMs: number;
    drainMs: number;
  };
  cross: { users: number; messages: number; window: number };
  /** Three nodes: `users` in pairs across A and B, `idle` users on C; once per bus. */
  cluster: { users: number; idle: number; messages: number; window: number };
  group: { members: number; messages: number; senders: number; window: number };
  logins: { users: number; passwordConcurrency: number };
  /** `sampleMs`: how long RSS is watched once the fill settled (see the idle scenario). */
  idle: { connections: number; sampleMs: number };
  sigterm: { connections: number };
  /** `kills`: SIGKILLs in a row, each of a freshly filled node; the figure is their median. */
  sigkill: { users: number; survivors: number; lease: boolean; kills: number };
  course: { users: number; messages: number; windows: number[] };
}

export const PROFILES: Record<Profile["name"], Profile> = {
  full: {
    name: "full",
    loadgens: 2,
    socketsPerLoadgen: 2500,
    runDeadlineMs: 180_000,
    direct: { users: 100, messages: 20_000, windows: [1, 8], warmupPerSender: 20 },
    latency: { users: 100, msgsPerSec: 5000, warmupMs: 3000, durationMs: 10_000, drainMs: 120_000 },
    cross: { users: 100, messages: 20_000, window: 8 },
    cluster: { users: 100, idle: 50, messages: 20_000, window: 8 },
    group: { members: 200, messages: 2_000, senders: 10, window: 1 },
    logins: { users: 1000, passwordConcurrency: 50 },
    idle: { connections: 10_000, sampleMs: 30_000 },
    sigterm: { connections: 5000 },
    sigkill: { users: 1000, survivors: 10, lease: true, kills: 7 },
    course: { users: 100, messages: 20_000, windows: [1, 8] },
  },
  quick: {
    name: "quick",
    loadgens: 2,
    socketsPerLoadgen: 2500,
    runDeadlineMs: 60_000,
    direct: { users: 100, messages: 10_000, windows: [1, 8], warmupPerSender: 10 },
    latency: { users: 100, msgsPerSec: 5000, warmupMs: 1000, durationMs: 3000, drainMs: 30_000 },
    cross: { users: 100, messages: 10_000, window: 8 },
    cluster: { users: 100, idle: 50, messages: 10_000, window: 8 },
    group: { members: 100, messages: 200, senders: 10, window: 1 },
    logins: { users: 200, passwordConcurrency: 50 },
    idle: { connections: 2000, sampleMs: 24_000 },
    sigterm: { connections: 1000 },
    sigkill: { users: 200, survivors: 5, lease: true, kills: 5 },
    course: { users: 100, messages: 10_000, windows: [1, 8] },
  },
  tiny: {
    name: "tiny",
    loadgens: 2,
    socketsPerLoadgen: 2500,
    runDeadlineMs: 20_000,
    direct: { users: 10, messages: 200, windows: [1, 8], warmupPerSender: 2 },
    latency: { users: 10, msgsPerSec: 200, warmupMs: 200, durationMs: 1000, drainMs: 10_000 },
    cross: { users: 10, messages: 200, window: 8 },
    cluster: { users: 10, idle: 4, messages: 200, window: 8 },
    group: { members: 6, messages: 20, senders: 2, window: 1 },
    logins: { users: 10, passwordConcurrency: 5 },
    idle: { connections: 20, sampleMs: 2000 },
    sigterm: { connections: 20 },
    sigkill: { users: 10, survivors: 2, lease: false, kills: 2 },
    course: { users: 10, messages: 200, windows: [1, 8] },
  },
};

export const SCENARIOS = [
  "direct",
  "latency",
  "cross",
  "cluster",
  "group",
  "logins",
  "idle",
  "sigterm",
  "sigkill",
  "course",
] as const;
export type ScenarioName = typeof SCENARIOS[number];
