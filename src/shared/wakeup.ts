// Waiting for "something arrived" with a deadline, for code that keeps its own queue or buffer
// (a line socket's buffer, a listener's waiting connections) and checks it again after each wake.

/** One waiter at a time: `until` resolves when `signal` is called or the deadline passes. */
export class Wakeup {
  private wake: (() => void) | undefined;

  signal(): void {
    this.wake?.();
  }

  /** Waits until signalled (true) or until `deadline` (a Date.now() time; false). */
  until(deadline: number): Promise<boolean> {
    const left = deadline - Date.now();
    if (left <= 0) return Promise.resolve(false);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = undefined;
        resolve(false);
      }, left);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve(true);
      };
    });
  }
}
