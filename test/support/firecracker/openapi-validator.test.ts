// The validator must be able to fail: each bad request here has to produce a violation.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { FirecrackerSpecValidator, type RequestToCheck } from './openapi-validator.ts';

const validator = FirecrackerSpecValidator.load();
const json = 'application/json';

function put(path: string, body: unknown): RequestToCheck {
  return { method: 'PUT', path, body: JSON.stringify(body), contentType: json };
}

function violations(request: RequestToCheck, v = validator): string {
  return v.check(request).violations.join('\n');
}

describe('Firecracker OpenAPI validator', () => {
  test('reads the whole document', () => {
    const ids = validator.allOperations().map((o) => o.operationId);
    for (const id of [
      'describeInstance',
      'createSyncAction',
      'putGuestBootSource',
      'putGuestDriveByID',
      'putMachineConfiguration',
      'putGuestNetworkInterfaceByID',
    ]) {
      assert.ok(ids.includes(id), id);
    }
  });

  test('accepts conforming requests', () => {
    assert.equal(violations({ method: 'GET', path: '/' }), '');
    assert.equal(violations(put('/machine-config', { vcpu_count: 2, mem_size_mib: 512 })), '');
    assert.equal(violations(put('/actions', { action_type: 'SendCtrlAltDel' })), '');
    assert.equal(
      violations(
        put('/drives/rootfs', {
          drive_id: 'rootfs',
          path_on_host: '/r.ext4',
          is_root_device: true,
          rate_limiter: { bandwidth: { size: 1, refill_time: 100 } },
        }),
      ),
      '',
    );
    assert.equal(violations({ method: 'PATCH', path: '/balloon/hinting/stop' }), '', 'no body parameter, none sent');
    assert.deepEqual(validator.check(put('/drives/base', { drive_id: 'base', is_root_device: false })).pathParams, { drive_id: 'base' });
  });

  test('rejects a field of the wrong type', () => {
    assert.match(violations(put('/machine-config', { vcpu_count: '2', mem_size_mib: 512 })), /vcpu_count: must be integer/);
    assert.match(violations(put('/machine-config', { vcpu_count: 1.5, mem_size_mib: 512 })), /vcpu_count: must be integer/);
    assert.match(violations(put('/drives/base', { drive_id: 'base', is_root_device: 'false' })), /is_root_device: must be boolean/);
  });

  test('rejects an unknown path and an undefined method', () => {
    assert.match(violations(put('/drive/base', {})), /no path of the document matches "\/drive\/base"/);
    assert.match(violations(put('/drives', {})), /no path/);
    assert.match(violations({ method: 'GET', path: '/actions' }), /GET is not defined for \/actions \(defined: PUT\)/);
    assert.match(violations({ method: 'DELETE', path: '/drives/base' }), /DELETE is not defined/);
  });

  test('rejects a missing required field, in the body and nested through $ref', () => {
    assert.match(violations(put('/drives/base', { drive_id: 'base', path_on_host: '/b' })), /missing required field "is_root_device"/);
    assert.match(violations(put('/network-interfaces/eth0', { iface_id: 'eth0' })), /missing required field "host_dev_name"/);
    assert.match(
      violations(put('/drives/base', { drive_id: 'base', is_root_device: false, rate_limiter: { ops: { refill_time: 10 } } })),
      /body\/rate_limiter\/ops: missing required field "size"/,
    );
    assert.match(violations({ method: 'PUT', path: '/boot-source', contentType: json }), /a BootSource body is required/);
  });

  test('rejects values outside an enum or a range', () => {
    assert.match(
      violations(put('/actions', { action_type: 'Reboot' })),
      /must be one of "FlushMetrics", "InstanceStart", "SendCtrlAltDel"/,
    );
    assert.match(
      violations(put('/drives/base', { drive_id: 'base', is_root_device: false, io_engine: 'Uring' })),
      /io_engine: must be one of/,
    );
    assert.match(violations(put('/machine-config', { vcpu_count: 0, mem_size_mib: 512 })), /vcpu_count: must be >= 1/);
    assert.match(violations(put('/machine-config', { vcpu_count: 33, mem_size_mib: 512 })), /vcpu_count: must be <= 32/);
  });

  test('rejects unknown fields as Firecracker does, although the bare document allows them', () => {
    const typo = put('/drives/base', { drive_id: 'base', is_root_device: false, read_only: true });
    assert.match(violations(typo), /unknown field "read_only"/);
    const bare = FirecrackerSpecValidator.load(undefined, { closedObjects: false });
    assert.equal(violations(typo, bare), '', 'the document itself never says additionalProperties: false');
    // A map-typed field stays open (Metrics.properties declares additionalProperties: string).
    assert.equal(violations(put('/metrics', { metrics_path: '/m', properties: { seat: '4' } })), '');
    assert.match(violations(put('/metrics', { metrics_path: '/m', properties: { seat: 4 } })), /properties\/seat: must be string/);
  });

  test('rejects bodies the transport or the operation cannot take', () => {
    assert.match(violations({ method: 'GET', path: '/', body: '{}', contentType: json }), /takes no body/);
    assert.match(violations({ method: 'PUT', path: '/actions', body: '{"action_type":', contentType: json }), /not JSON/);
    assert.match(
      violations({ method: 'PUT', path: '/actions', body: '{"action_type":"InstanceStart"}', contentType: 'text/xml' }),
      /Content-Type/,
    );
    assert.match(
      violations({ ...put('/actions', { action_type: 'InstanceStart' }), transferEncoding: 'chunked' }),
      /chunked transfer encoding/,
    );
  });

  test('checks values against single definitions', () => {
    assert.deepEqual(validator.validateDefinition('BootSource', { kernel_image_path: '/k' }), []);
    assert.match(validator.validateDefinition('BootSource', { boot_args: 'x' }).join(), /kernel_image_path/);
    assert.throws(() => validator.validateDefinition('NoSuchThing', {}), /no definition/);
  });
});
