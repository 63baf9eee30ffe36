/** What the run's parts (turns, endings, recovery) are built from: the engine's shared dependencies. */
import type { Config } from "../../config.ts";
import type { RunEnvironmentRuntime } from "../environment/index.ts";
import type { ModelGateway } from "../gateway/gateway.ts";
import type { Logger } from "../log.ts";
import type { SecretBox } from "../secrets/secrets.ts";
import type { SessionHost } from "../session/host.ts";
import type { RunStore } from "../store/store.ts";
import type { Grants } from "./grant.ts";
import type { LiveSessions } from "./sessions.ts";
import type { RunWriter } from "./writer.ts";

export interface RunParts {
  config: Config;
  store: RunStore;
  writer: RunWriter;
  sessions: LiveSessions;
  host: SessionHost;
  gateway: ModelGateway;
  grants: Grants;
  secrets: SecretBox;
  /** The variables a run's commands see and the masking of what they print. */
  environment: RunEnvironmentRuntime;
  log: Logger;
  now: () => Date;
  /** True once the engine is closing: a turn cut short ends shutting_down, not cancelled. */
  closing: () => boolean;
}
