// The learner's workspace page: terminal tabs, the file tree and the editor, wired together.
import '@xterm/xterm/css/xterm.css';
import './style.css';
import { sessionFromLocation, seatHealth, type PageSession } from './page-session.ts';
import { FilesApi, FilesError, type Entry } from './files-api.ts';
import { Editor } from './editor.ts';
import { Explorer, joinPath, parentOf } from './explorer.ts';
import { TerminalTabs } from './terminal-tabs.ts';
import { askText, choose } from './dialog.ts';
import { watchWorkshopEnd } from './workshop-notice.ts';

const byId = <T extends HTMLElement>(id: string): T => {
  const element = document.getElementById(id);
  if (!element) throw new Error(`the page has no #${id}`);
  return element as T;
};

function showError(error: unknown): void {
  const banner = byId('page-error');
  banner.textContent = error instanceof Error ? error.message : String(error);
  banner.hidden = false;
  setTimeout(() => (banner.hidden = true), 8_000);
}

function setStatus(text: string): void {
  byId('editor-status').textContent = text;
}

async function start(session: PageSession): Promise<void> {
  byId('seat-label').textContent = `${session.workshopId} · seat ${session.seatId}`;
  const health = await seatHealth(session);
  if (health === 'unauthorized') return fatal('This link is not valid (or has expired): ask your instructor for a new one.');
  if (health === 'gone') return fatal('This seat does not exist (any more): ask your instructor.');
  watchWorkshopEnd(byId('workshop-notice'), window.location.href);

  const state = byId('conn-state');
  new TerminalTabs(session, byId('terminal-tabs'), byId('terminal-panes'), byId<HTMLButtonElement>('new-terminal'), (s) => {
    state.textContent = s;
    state.dataset['state'] = s;
  });
  const api = new FilesApi(session);
  // A reload or a closed tab would lose unsaved edits: the browser asks first.
  window.addEventListener('beforeunload', (event) => {
    if (editor.dirty) event.preventDefault();
  });
  const saveButton = byId<HTMLButtonElement>('save');
  const editor = new Editor(
    byId('editor'),
    () => void save(),
    (dirty) => {
      saveButton.disabled = !dirty;
      byId('editor-path').textContent = editor.file ? `${editor.file.path}${dirty ? ' •' : ''}` : 'no file open';
    },
  );
  const explorer = new Explorer(api, byId('tree'), { openFile: (entry) => void openFile(entry), error: showError });

  async function openFile(entry: Entry, discardChanges = false): Promise<void> {
    if (
      editor.dirty &&
      !discardChanges &&
      (await choose(`${editor.file?.path} has unsaved changes.`, [{ value: 'discard', label: 'Discard them' }])) === 'cancel'
    )
      return;
    try {
      const file = await api.open(entry.path);
      editor.open(
        entry.path,
        file.binary ? `${entry.name} is not text the editor opens (binary, not UTF-8, or over 2 MiB): download it instead.` : file.text,
        file.etag,
        file.binary,
      );
      setStatus('');
    } catch (error) {
      showError(error);
    }
  }

  // One save at a time: Ctrl-S reaches both the editor's keymap and the page's listener.
  let saving = false;

  /** Saves over the version that was opened; if the file changed on disk meanwhile, asks first. */
  async function save(force = false): Promise<void> {
    const file = editor.file;
    if (!file || saveButton.disabled || saving) return;
    const text = editor.text;
    saving = true;
    let conflict = false;
    try {
      setStatus('saving…');
      const etag = await api.save(file.path, text, force ? 'always' : file.etag);
      // Another file may have been opened while this one was saving: its version is not this one.
      if (editor.file === file) editor.saved(text, etag);
      setStatus('saved');
    } catch (error) {
      conflict = error instanceof FilesError && error.code === 'precondition_failed';
      setStatus(conflict ? 'changed on disk' : 'not saved');
      if (!conflict) showError(error);
    } finally {
      saving = false;
    }
    if (!conflict) return;
    const answer = await choose(`${file.path} changed on disk since you opened it. Overwrite it with your version?`, [
      { value: 'overwrite', label: 'Overwrite' },
      { value: 'reload', label: 'Load the version on disk' },
    ]);
    if (answer === 'overwrite') return save(true);
    if (answer === 'reload')
      return openFile({ name: file.path.split('/').pop() ?? '', path: file.path, type: 'file', size: 0, modified_at: '' }, true);
    setStatus('not saved: changed on disk');
  }
  saveButton.addEventListener('click', () => void save());
  document.addEventListener('keydown', (event) => {
    if (event.defaultPrevented) return; // the editor's own Ctrl-S handled it
    if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === 's') {
      event.preventDefault();
      void save();
    }
  });

  wireFileActions(api, explorer, editor, openFile);
  await explorer.refresh();
}

function wireFileActions(api: FilesApi, explorer: Explorer, editor: Editor, openFile: (entry: Entry) => Promise<void>): void {
  const act = (id: string, action: () => Promise<void>): void => byId(id).addEventListener('click', () => void action().catch(showError));
  act('refresh', () => explorer.refresh());
  act('new-file', async () => {
    const name = await askText(`New file in ${explorer.targetFolder()}`, '', 'Create');
    if (name === null) return;
    const path = joinPath(explorer.targetFolder(), name);
    await api.save(path, '', null);
    await explorer.reveal(path);
    await openFile({ name, path, type: 'file', size: 0, modified_at: '' });
    editor.focus();
  });
  act('new-folder', async () => {
    const name = await askText(`New folder in ${explorer.targetFolder()}`, '', 'Create');
    if (name === null) return;
    const path = joinPath(explorer.targetFolder(), name);
    await api.mkdir(path);
    await explorer.reveal(path);
  });
  act('rename', async () => {
    const entry = explorer.selected;
    if (!entry) return showError(new Error('select a file or folder to rename'));
    const name = await askText(`Rename ${entry.path} to`, entry.name, 'Rename');
    if (name === null || name === entry.name) return;
    const to = joinPath(parentOf(entry.path), name);
    await api.move(entry.path, to);
    // The open file, or the folder it is in: it is saved where it now is.
    const open = editor.file?.path;
    if (open === entry.path || open?.startsWith(`${entry.path}/`)) editor.moved(`${to}${open.slice(entry.path.length)}`);
    explorer.forget(entry.path);
    await explorer.reveal(to);
  });
  act('delete', async () => {
    const entry = explorer.selected;
    if (!entry) return showError(new Error('select a file or folder to delete'));
    const what = entry.type === 'directory' ? `the folder ${entry.path} and everything in it` : entry.path;
    if ((await choose(`Delete ${what}?`, [{ value: 'delete', label: 'Delete' }])) !== 'delete') return;
    await api.remove(entry.path, entry.type === 'directory');
    if (editor.file && (editor.file.path === entry.path || editor.file.path.startsWith(`${entry.path}/`))) editor.moved(undefined);
    explorer.forget(entry.path);
    await explorer.refresh();
  });
  act('download', async () => {
    const entry = explorer.selected;
    if (!entry || entry.type !== 'file') return showError(new Error('select a file to download'));
    const link = document.createElement('a');
    link.href = api.downloadUrl(entry.path);
    link.download = entry.name;
    link.click();
  });
  const input = byId<HTMLInputElement>('upload-input');
  act('upload', async () => input.click());
  input.addEventListener('change', () => {
    void uploadAll(api, explorer, [...(input.files ?? [])]);
    input.value = '';
  });
  const panel = byId('tree').closest('aside') as HTMLElement;
  panel.addEventListener('dragover', (event) => {
    event.preventDefault();
    panel.classList.add('dropping');
  });
  panel.addEventListener('dragleave', () => panel.classList.remove('dropping'));
  panel.addEventListener('drop', (event) => {
    event.preventDefault();
    panel.classList.remove('dropping');
    void uploadAll(api, explorer, [...(event.dataTransfer?.files ?? [])]);
  });
}

/** Uploads files one after another into the selected folder, each with a progress bar. */
async function uploadAll(api: FilesApi, explorer: Explorer, files: File[]): Promise<void> {
  const folder = explorer.targetFolder();
  const list = byId('uploads');
  for (const file of files) {
    const item = document.createElement('li');
    const label = document.createElement('span');
    label.textContent = file.name;
    const bar = document.createElement('progress');
    bar.max = Math.max(1, file.size);
    bar.value = 0;
    item.append(label, bar);
    list.append(item);
    try {
      await api.upload(file, joinPath(folder, file.name), (sent) => (bar.value = sent));
      bar.value = bar.max;
      item.classList.add('done');
      setTimeout(() => item.remove(), 3_000);
    } catch (error) {
      item.classList.add('failed');
      label.textContent = `${file.name}: ${error instanceof Error ? error.message : String(error)}`;
    }
  }
  await explorer.refresh();
}

function fatal(message: string): void {
  const banner = byId('page-error');
  banner.textContent = message;
  banner.hidden = false;
  byId('conn-state').textContent = 'not connected';
  byId('conn-state').dataset['state'] = 'ended';
}

start(sessionFromLocation(window.location)).catch(showError);
