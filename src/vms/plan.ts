// A create, a delete or a recovery is a plan: an ordered list of small steps, each saying whether
// it still needs doing and how to do it. Running a plan again after a crash does only what is
// missing, so recovery is the same plan as create; a plan is data and can be listed and tested.

export interface Step {
  readonly name: string;
  /** False when what the step makes is already there (a recovery finds it). Absent: always needed. */
  needed?(): Promise<boolean>;
  /** Brings this one aspect into its desired state. Idempotent. */
  do(): Promise<void>;
}

/** What a run did: the names of the steps done and of those found already done. */
export interface PlanReport {
  readonly done: readonly string[];
  readonly skipped: readonly string[];
  /** How long each step that ran took (ms): where a slow create spent its time. */
  readonly ms: Readonly<Record<string, number>>;
}

export class StepError extends Error {
  constructor(
    readonly step: string,
    override readonly cause: unknown,
  ) {
    super(`${step}: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = 'StepError';
  }
}

export function stepNames(steps: readonly Step[]): string[] {
  return steps.map((step) => step.name);
}

/** Runs the steps in order, skipping those not needed; stops at the first failure (a StepError). */
export async function runPlan(steps: readonly Step[]): Promise<PlanReport> {
  const done: string[] = [];
  const skipped: string[] = [];
  const ms: Record<string, number> = {};
  for (const step of steps) {
    const started = performance.now();
    try {
      if (step.needed && !(await step.needed())) {
        skipped.push(step.name);
        continue;
      }
      await step.do();
      done.push(step.name);
      ms[step.name] = Math.round((performance.now() - started) * 10) / 10;
    } catch (error) {
      throw new StepError(step.name, error);
    }
  }
  return { done, skipped, ms };
}

/** Runs every step even when some fail (a teardown must remove all it can); throws the first error. */
export async function runTeardown(steps: readonly Step[]): Promise<PlanReport> {
  const done: string[] = [];
  const ms: Record<string, number> = {};
  let first: StepError | undefined;
  for (const step of steps) {
    const started = performance.now();
    try {
      await step.do();
      done.push(step.name);
    } catch (error) {
      first ??= new StepError(step.name, error);
    }
    ms[step.name] = Math.round((performance.now() - started) * 10) / 10;
  }
  if (first) throw first;
  return { done, skipped: [], ms };
}
