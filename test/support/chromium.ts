// Debian's chromium, headless, for the browser tests. Its own background connections (updates,
// sync, QUIC probes) would fail against the closed network, so they are off; Playwright gives
// each launch a fresh profile of its own (--user-data-dir is its to set).
import { chromium, type Browser } from 'playwright-core';

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
}
