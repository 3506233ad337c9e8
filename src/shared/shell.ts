// Quoting for the few places that must hand a command line to a shell (hooks, wrapper scripts).

/** One shell word, whatever `value` holds. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}
