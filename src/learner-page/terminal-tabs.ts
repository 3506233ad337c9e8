// The terminal tabs: each tab its own shell session. The sessions' names are kept in the
// browser's session storage for this seat, so a reload returns to the same shells.
import { randomId, type PageSession } from './page-session.ts';
import { TerminalTab, type ConnectionState } from './terminal-tab.ts';

interface Tab {
  readonly terminal: TerminalTab;
  readonly button: HTMLButtonElement;
  readonly pane: HTMLElement;
}

export class TerminalTabs {
  private readonly tabs: Tab[] = [];
  private active: Tab | undefined;
  private readonly storageKey: string;

  constructor(
    private readonly session: PageSession,
    private readonly tabBar: HTMLElement,
    private readonly panes: HTMLElement,
    private readonly newTabButton: HTMLButtonElement,
    private readonly onState: (state: ConnectionState) => void,
  ) {
    this.storageKey = `clarateach:terminals:${session.workshopId}/${session.seatId}`;
    newTabButton.addEventListener('click', () => this.open(randomId('tab')));
    const saved = this.savedSessions();
    for (const id of saved.length > 0 ? saved : [randomId('tab')]) this.open(id);
    this.select(this.tabs[0]);
  }

  private savedSessions(): string[] {
    try {
      const value: unknown = JSON.parse(sessionStorage.getItem(this.storageKey) ?? '[]');
      return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string' && /^[A-Za-z0-9_-]{1,64}$/.test(v)) : [];
    } catch {
      return [];
    }
  }

  private save(): void {
    sessionStorage.setItem(this.storageKey, JSON.stringify(this.tabs.map((t) => t.terminal.sessionId)));
  }

  open(sessionId: string): void {
    const pane = document.createElement('div');
    pane.className = 'terminal-pane';
    pane.dataset['session'] = sessionId;
    this.panes.append(pane);
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'tab';
    button.setAttribute('role', 'tab');
    const label = document.createElement('span');
    label.textContent = `Terminal ${this.tabs.length + 1}`;
    const close = document.createElement('span');
    close.className = 'close';
    close.textContent = '×';
    close.title = 'Close this tab (the shell keeps running until it exits)';
    button.append(label, close);
    this.tabBar.insertBefore(button, this.newTabButton);
    const tab: Tab = {
      pane,
      button,
      terminal: new TerminalTab({
        session: this.session,
        sessionId,
        container: pane,
        onState: (state) => {
          button.dataset['state'] = state;
          if (this.active === tab) this.onState(state);
        },
      }),
    };
    button.addEventListener('click', (event) => {
      if (event.target === close) this.remove(tab);
      else this.select(tab);
    });
    this.tabs.push(tab);
    this.save();
    this.select(tab);
  }

  private select(tab: Tab | undefined): void {
    if (tab === undefined) return;
    this.active = tab;
    for (const t of this.tabs) {
      const on = t === tab;
      t.pane.classList.toggle('active', on);
      t.button.classList.toggle('active', on);
      t.button.setAttribute('aria-selected', String(on));
    }
    tab.terminal.fitToContainer();
    tab.terminal.focus();
    this.onState(tab.terminal.state);
  }

  private remove(tab: Tab): void {
    if (this.tabs.length === 1) return; // always one terminal
    tab.terminal.close();
    tab.pane.remove();
    tab.button.remove();
    this.tabs.splice(this.tabs.indexOf(tab), 1);
    this.save();
    if (this.active === tab) this.select(this.tabs[0]);
  }
}
