// The scrollback buffer (bounded, never splits a UTF-8 character) and the terminal frame parser.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Scrollback, utf8Tail } from './scrollback.ts';
import { parseClientFrame, parseDimensionParam } from './protocol.ts';

describe('Scrollback', () => {
  it('keeps everything below capacity', () => {
    const s = new Scrollback(16);
    s.append('abc');
    s.append('def');
    assert.equal(s.snapshot(), 'abcdef');
    assert.equal(s.size, 6);
  });

  it('drops the oldest bytes and never cuts a UTF-8 character', () => {
    const s = new Scrollback(10);
    s.append('ééééé'); // 10 bytes
    s.append('x'); // 11 -> cut 1 byte, which lands inside the first é
    const snap = s.snapshot();
    assert.equal(snap, 'ééééx');
    assert.ok(!snap.includes('\uFFFD'));
    assert.ok(s.size <= 10);
  });

  it('handles one chunk larger than the capacity', () => {
    const s = new Scrollback(8);
    s.append('a'.repeat(5));
    s.append(`${'b'.repeat(20)}€€`); // € is 3 bytes
    assert.equal(s.snapshot(), 'bb€€');
  });

  it('stays bounded over many appends', () => {
    const s = new Scrollback(1000);
    for (let i = 0; i < 10_000; i += 1) s.append(`line ${i} ✓\n`);
    assert.ok(s.size <= 1000 && s.size >= 997);
    assert.ok(s.snapshot().endsWith('line 9999 ✓\n'));
    assert.ok(!s.snapshot().includes('\uFFFD'));
  });

  it('utf8Tail skips continuation bytes', () => {
    const buf = Buffer.from('a😀b'); // 1 + 4 + 1
    assert.equal(utf8Tail(buf, 5).toString(), '😀b');
    assert.equal(utf8Tail(buf, 6).toString(), 'a😀b');
    assert.equal(utf8Tail(buf, 4).toString(), 'b');
    assert.equal(utf8Tail(buf, 10).toString(), 'a😀b');
  });
});

describe('terminal protocol', () => {
  it('parses valid frames and rejects the rest', () => {
    assert.deepEqual(parseClientFrame('{"type":"input","data":"ls\\r"}'), { ok: true, frame: { type: 'input', data: 'ls\r' } });
    assert.deepEqual(parseClientFrame('{"type":"resize","cols":120,"rows":40}'), {
      ok: true,
      frame: { type: 'resize', cols: 120, rows: 40 },
    });
    for (const bad of [
      '',
      'x',
      'null',
      '[]',
      '"s"',
      '{}',
      '{"type":"input"}',
      '{"type":"resize","cols":"1","rows":2}',
      '{"type":"resize","cols":1001,"rows":2}',
    ]) {
      assert.equal(parseClientFrame(bad).ok, false, bad);
    }
  });

  it('parses ?cols/?rows', () => {
    assert.equal(parseDimensionParam(null), undefined);
    assert.equal(parseDimensionParam('80'), 80);
    assert.equal(parseDimensionParam('0'), null);
    assert.equal(parseDimensionParam('-1'), null);
    assert.equal(parseDimensionParam('12x'), null);
  });
});
