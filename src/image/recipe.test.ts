// The image recipe: the repository one is valid, defaults, errors naming file and field.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defaultRecipePath, loadRecipe, parseRecipe } from './recipe.ts';

test('the repository recipe is valid and has what a learner needs', async () => {
  const recipe = await loadRecipe(defaultRecipePath());
  for (const pkg of ['git', 'python3', 'curl', 'ca-certificates', 'build-essential', 'iproute2', 'iputils-ping', 'procps', 'less']) {
    assert.ok(recipe.packages.includes(pkg), pkg);
  }
  assert.ok(recipe.packages.includes('nano') || recipe.packages.includes('vim-tiny'));
  assert.equal(recipe.learner.sudo, false);
  assert.equal(recipe.kernelPackage, 'linux-image-cloud-amd64');
  for (const mod of ['virtio_mmio', 'virtio_blk', 'virtio_net', 'overlay']) assert.ok(recipe.initrdModules.includes(mod), mod);
});

test('defaults fill what is left out', () => {
  const recipe = parseRecipe('/r.json', JSON.stringify({ sources: ['deb http://deb.debian.org/debian bookworm main'], packages: [] }));
  assert.equal(recipe.suite, 'bookworm');
  assert.equal(recipe.variant, 'minbase');
  assert.deepEqual(recipe.learner, { sudo: false, shell: '/bin/bash' });
  assert.deepEqual(recipe.files, []);
  assert.ok(recipe.initrdModules.includes('virtio_blk'));
});

test('mistakes are reported with the file and the field', () => {
  const base = { sources: ['deb http://deb.debian.org/debian bookworm main'], packages: ['git'] };
  const bad = (doc: object): string => {
    try {
      parseRecipe('/r.json', JSON.stringify(doc));
    } catch (error) {
      return (error as Error).message;
    }
    return 'no error';
  };
  assert.equal(bad({ ...base, packages: ['git; rm -rf /'] }), '/r.json: packages[0]: is not a Debian package name');
  assert.equal(bad({ ...base, pakages: [] }), '/r.json: pakages: unknown field');
  assert.equal(bad({ ...base, sources: [] }), '/r.json: sources: needs at least one apt source');
  assert.equal(bad({ ...base, files: [{ src: 'x', dest: 'etc/x' }] }), '/r.json: files[0].dest: must be an absolute path without ".."');
  assert.equal(
    bad({ ...base, files: [{ src: 'x', dest: '/etc/x', mode: '644x' }] }),
    '/r.json: files[0].mode: must be an octal string such as "0644"',
  );
  assert.equal(bad({ ...base, learner: { sudo: 'yes' } }), '/r.json: learner.sudo: must be true or false');
  assert.equal(
    bad({ ...base, variant: 'huge' }),
    '/r.json: variant: must be one of minbase, essential, apt, required, important, standard',
  );
  assert.match(bad({}).toString(), /sources/);
  assert.throws(() => parseRecipe('/r.json', '{'), /\/r\.json: \(file\): not valid JSON/);
});
