// A create, a delete or a recovery is a plan: an ordered list of small idempotent steps. Running
// a plan again after a crash converges on the same result, so recovery needs no special code.

export interface Step {
  readonly name: string;
  /** Brings this one aspect into its desired state; does nothing when it already is. */
  ensure(): Promise<void>;
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

export async function runPlan(steps: readonly Step[]): Promise<void> {
  for (const step of steps) {
    try {
      await step.ensure();
    } catch (error) {
      throw new StepError(step.name, error);
    }
  }
}

/** Runs every step even when some fail (teardown must remove all it can); throws the first error. */
export async function runTeardown(steps: readonly Step[]): Promise<void> {
  let first: StepError | undefined;
  for (const step of steps) {
    try {
      await step.ensure();
    } catch (error) {
      first ??= new StepError(step.name, error);
    }
  }
  if (first) throw first;
}
