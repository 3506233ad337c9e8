// Types of architecture.js (plain JS so that eslint.config.js can load it without a TypeScript loader).
export interface Part {
  readonly job: string;
  readonly mayImport: readonly string[];
}
export declare const PARTS: Readonly<Record<string, Part>>;
export declare function boundaryZones(
  parts?: Readonly<Record<string, Part>>,
): { target: string; from: string; except: string[]; message: string }[];
