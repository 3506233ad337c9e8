#!/usr/bin/env node
// The CLI runs the TypeScript sources directly through tsx's loader, so there is no build step
// whose output could drift from the code.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
