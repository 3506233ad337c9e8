// GET /templates: the agent's templates, each with its builds (the current one, and older ones
// that VMs still use).
import type { FastifyInstance } from 'fastify';
import type { ImageCatalog, SnapshotPort } from '../../vms/ports.ts';
import type { VmManager } from '../../vms/manager.ts';

export interface TemplateRoutesOptions {
  readonly templates: ImageCatalog;
  readonly manager: VmManager;
  readonly snapshots?: SnapshotPort;
}

export async function templateRoutes(app: FastifyInstance, o: TemplateRoutesOptions): Promise<void> {
  app.get('/templates', async () => {
    const vms = o.manager.list();
    const using = (template: string, build: string): number => vms.filter((vm) => vm.template === template && vm.buildId === build).length;
    const snapshots = o.snapshots?.list() ?? [];
    const snapshotsOf = (template: string, build: string) =>
      snapshots
        .filter((s) => s.template === template && s.buildId === build)
        .map((s) => ({ vcpus: s.vcpus, memory_mb: s.memoryMb, state: s.state, created_at: s.createdAt, error: s.error }));
    return {
      templates: (await o.templates.list()).map((t) => ({
        name: t.name,
        current_build: t.currentBuild,
        builds: t.builds.map((b) => ({
          id: b.id,
          built_at: b.builtAt,
          current: b.current,
          vms: using(t.name, b.id),
          snapshots: snapshotsOf(t.name, b.id),
        })),
      })),
    };
  });
}
