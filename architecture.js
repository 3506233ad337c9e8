// The agent's parts (folders of src/) and which parts each may import: the lifecycle (vms) owns
// its ports and imports no adapter; adapters import the lifecycle's port types; only the
// composition root (cli) sees everything, and nothing imports it. The linter enforces this map
// (eslint.config.js), so no two parts can import each other, and the README shows it.
export const PARTS = {
  shared: { job: 'running host commands, the logger, file and shell helpers', mayImport: [] },
  guest: { job: 'the workspace services inside each VM (terminal, files) and its init', mayImport: [] },
  host: { job: 'host resources shared by parts: processes, per-VM users, cgroups (v1 and v2), the kernel relay', mayImport: ['shared'] },
  vms: { job: 'the VM lifecycle: ports, plans, create/delete/recover, orphan sweep, readiness', mayImport: ['shared'] },
  store: { job: 'VM records in SQLite (the VmRepository port)', mayImport: ['vms', 'shared'] },
  disks: { job: "each VM's writable layer (the DiskPort)", mayImport: ['vms', 'shared'] },
  network: { job: 'bridge, TAPs, addressing, firewall (the NetworkPort)', mayImport: ['vms', 'shared'] },
  image: { job: 'building the guest images (kernel, initrd, rootfs) and naming their files', mayImport: ['guest', 'host', 'shared'] },
  templates: {
    job: 'templates (named guest images) and their immutable builds, hard-linked per build (the ImageCatalog)',
    mayImport: ['vms', 'image', 'shared'],
  },
  snapshots: {
    job: 'snapshots of template builds booted to "services ready", made in the background (the SnapshotPort)',
    mayImport: ['vms', 'shared'],
  },
  config: { job: 'the agent configuration from environment and flags', mayImport: ['network', 'shared'] },
  hypervisors: {
    job: 'the VMM drivers, QEMU and Firecracker (the HypervisorDriver port)',
    mayImport: ['vms', 'host', 'network', 'image', 'config', 'shared'],
  },
  http: { job: 'the one error shape, the seat path parameters and request ids, for API and proxy', mayImport: ['vms', 'shared'] },
  proxy: { job: "a seat's terminal (WebSocket) and files (HTTP) proxied into its guest", mayImport: ['http', 'vms', 'guest', 'shared'] },
  metrics: {
    job: 'the Prometheus metrics: lifecycle, proxy and error observers, VM gauges',
    mayImport: ['http', 'proxy', 'vms'],
  },
  api: { job: 'the HTTP API: auth, audit, routes, serving the learner page', mayImport: ['http', 'proxy', 'vms', 'shared'] },
  'learner-page': {
    job: "the learner's workspace page in the browser (terminal tabs, file tree, editor), built by Vite",
    mayImport: ['guest'],
  },
  'agent-client': {
    job: "a typed client of the agent's HTTP API, for the operator CLI and the workshop server",
    mayImport: ['shared'],
  },
  workshops: {
    job: "the workshop server's domain: workshops, seats, joins, placement, worker health; declares its ports",
    mayImport: [],
  },
  'server-db': {
    job: "the workshop server's database (PGlite or PostgreSQL), its migrations, the WorkshopRepository",
    mayImport: ['workshops'],
  },
  'server-workers': { job: "the WorkerPort over the workers' agents", mayImport: ['workshops', 'agent-client'] },
  'server-config': { job: 'the workshop server configuration from environment and flags', mayImport: ['workshops'] },
  'server-pages': {
    job: "the workshop server's pages in the browser: the instructor's dashboard and the learners' join page, built by Vite",
    mayImport: [],
  },
  'server-api': {
    job: "the workshop server's HTTP API: instructors, workshops, workers, joins, its pages, and the proxy to the workers",
    mayImport: ['workshops', 'http', 'shared'],
  },
  cli: {
    job: 'command lines and the composition roots (cli/agent.ts, cli/server.ts)',
    mayImport: [
      'agent-client',
      'api',
      'config',
      'disks',
      'host',
      'hypervisors',
      'image',
      'metrics',
      'network',
      'proxy',
      'server-api',
      'server-config',
      'server-db',
      'server-workers',
      'shared',
      'snapshots',
      'store',
      'templates',
      'vms',
      'workshops',
    ],
  },
};

/** Zones for import-x/no-restricted-paths: a part's files may import from src/ only what its entry allows. */
export function boundaryZones(parts = PARTS) {
  return Object.entries(parts).map(([part, { mayImport }]) => ({
    target: `./src/${part}`,
    from: './src',
    except: [`./${part}`, ...mayImport.map((other) => `./${other}`)],
    message: `src/${part} may import only ${mayImport.length ? mayImport.map((p) => `src/${p}`).join(', ') : 'itself'} (architecture.js)`,
  }));
}
