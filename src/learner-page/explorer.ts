// The file tree of the workspace: folders open lazily, one entry selected at a time; actions on
// the selection (new file or folder inside it, rename, delete, download) and uploads by drag and drop.
import type { Entry, FilesApi } from './files-api.ts';

export interface ExplorerEvents {
  readonly openFile: (entry: Entry) => void;
  readonly error: (error: unknown) => void;
}

export class Explorer {
  private readonly expanded = new Set<string>(['/']);
  selected: Entry | undefined;

  constructor(
    private readonly api: FilesApi,
    private readonly tree: HTMLElement,
    private readonly events: ExplorerEvents,
  ) {}

  /** The folder new entries and uploads go into: the selected folder, or the selected file's. */
  targetFolder(): string {
    if (this.selected === undefined) return '/';
    return this.selected.type === 'directory' ? this.selected.path : parentOf(this.selected.path);
  }

  async refresh(): Promise<void> {
    try {
      const rows = await this.rows('/', 0);
      this.tree.replaceChildren(...rows);
    } catch (error) {
      this.events.error(error);
    }
  }

  async reveal(path: string): Promise<void> {
    for (let parent = parentOf(path); parent !== '/'; parent = parentOf(parent)) this.expanded.add(parent);
    await this.refresh();
    this.tree.querySelector<HTMLElement>(`[data-path="${CSS.escape(path)}"]`)?.click();
  }

  forget(path: string): void {
    if (this.selected && (this.selected.path === path || this.selected.path.startsWith(`${path}/`))) this.selected = undefined;
    for (const p of [...this.expanded]) if (p === path || p.startsWith(`${path}/`)) this.expanded.delete(p);
  }

  private async rows(folder: string, depth: number): Promise<HTMLElement[]> {
    const entries = await this.api.list(folder);
    const rows: HTMLElement[] = [];
    for (const entry of entries) {
      rows.push(this.row(entry, depth));
      if (entry.type === 'directory' && this.expanded.has(entry.path)) rows.push(...(await this.rows(entry.path, depth + 1)));
    }
    return rows;
  }

  private row(entry: Entry, depth: number): HTMLElement {
    const item = document.createElement('li');
    item.setAttribute('role', 'treeitem');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = `entry ${entry.type}`;
    button.dataset['path'] = entry.path;
    button.style.paddingLeft = `${0.5 + depth}rem`;
    const open = this.expanded.has(entry.path);
    if (entry.type === 'directory') item.setAttribute('aria-expanded', String(open));
    button.textContent = `${entry.type === 'directory' ? (open ? '▾ ' : '▸ ') : ''}${entry.name}`;
    if (this.selected?.path === entry.path) button.classList.add('selected');
    button.addEventListener('click', () => this.select(entry, button));
    button.addEventListener('dblclick', () => {
      if (entry.type !== 'directory') this.events.openFile(entry);
    });
    item.append(button);
    return item;
  }

  private select(entry: Entry, button: HTMLElement): void {
    this.selected = entry;
    for (const other of this.tree.querySelectorAll('.entry.selected')) other.classList.remove('selected');
    button.classList.add('selected');
    if (entry.type === 'directory') {
      if (this.expanded.has(entry.path)) this.expanded.delete(entry.path);
      else this.expanded.add(entry.path);
      void this.refresh();
    } else {
      this.events.openFile(entry);
    }
  }
}

export function parentOf(path: string): string {
  const at = path.lastIndexOf('/');
  return at <= 0 ? '/' : path.slice(0, at);
}

export function joinPath(folder: string, name: string): string {
  return `${folder === '/' ? '' : folder}/${name}`;
}
