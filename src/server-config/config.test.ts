// The workshop server's configuration as an operator meets it: the defaults the README names,
// flags over environment, and one clear line naming the setting for every bad value.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadServerConfig, serverConfigHelp, ServerConfigError, SERVER_SETTINGS } from './config.ts';

test('defaults: port 8080 on loopback, the embedded database in /var/lib/clarateach/server, spread placement', () => {
  const c = loadServerConfig({});
  assert.equal(c.port, 8080);
  assert.equal(c.host, '127.0.0.1');
  assert.equal(c.dataDir, '/var/lib/clarateach/server');
  assert.equal(c.databaseUrl, undefined);
  assert.equal(c.placement, 'spread');
  assert.equal(c.seatMoveAfterS, 300);
  assert.equal(c.secureCookies, 'auto');
  assert.equal(c.trustProxy, false);
});

test('a flag wins over its environment variable, in both spellings', () => {
  const env = { PORT: '9000', DATABASE_URL: 'postgres://a@db/x', PLACEMENT: 'spread' };
  assert.equal(loadServerConfig(env).port, 9000);
  const c = loadServerConfig(env, ['--port', '7000', '--placement=pack', '--data-dir', '/srv/ct/']);
  assert.equal(c.port, 7000);
  assert.equal(c.placement, 'pack');
  assert.equal(c.dataDir, '/srv/ct', 'a trailing slash is dropped');
  assert.equal(c.databaseUrl, 'postgres://a@db/x');
});

test('bad values stop start-up with one line naming the setting', () => {
  const refused = (env: Record<string, string>, argv: string[], pattern: RegExp): void =>
    assert.throws(
      () => loadServerConfig(env, argv),
      (error: unknown) => error instanceof ServerConfigError && pattern.test(error.message) && !error.message.includes('\n'),
    );
  refused({ PORT: 'x' }, [], /^PORT: /);
  refused({ PORT: '70000' }, [], /^PORT: /);
  refused({ DATA_DIR: 'relative/dir' }, [], /^DATA_DIR: must be an absolute path/);
  refused({ DATABASE_URL: 'mysql://x' }, [], /^DATABASE_URL: must be a postgres/);
  refused({ PLACEMENT: 'random' }, [], /^PLACEMENT: /);
  refused({ SECURE_COOKIES: 'yes' }, [], /^SECURE_COOKIES: /);
  refused({ SEAT_MOVE_AFTER_S: '-1' }, [], /^SEAT_MOVE_AFTER_S: /);
  refused({}, ['--no-such-flag', '1'], /^--no-such-flag: unknown flag/);
  refused({}, ['--port'], /^--port: needs a value/);
  refused({}, ['stray'], /unexpected argument "stray"/);
});

test('--help lists every setting with its variable and default', () => {
  const help = serverConfigHelp();
  for (const s of Object.values(SERVER_SETTINGS)) {
    assert.ok(help.includes(s.flag) && help.includes(s.env), `${s.env} in the help`);
  }
  assert.match(help, /--port\s+PORT .*\(default: 8080\)/);
});
