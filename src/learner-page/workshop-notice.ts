// Opened through the workshop server (/w/{ws}/{seat}/), the page can ask it about the workshop
// (GET /api/me beside the page, with the learner's cookie) and warn before the workshop ends.
// Opened on an agent directly there is no such API: a first answer other than 200 ends the polling.

/** How long before the end the warning shows. */
export const WARN_BEFORE_MS = 10 * 60_000;
const POLL_MS = 30_000;

interface Me {
  workshop?: { ends_at?: string; state?: string };
}

/** The warning for a workshop ending at `endsAt` (ms), or '' while it is still far off. */
export function endNotice(endsAt: number, state: string, now: number): string {
  if (state === 'ended' || endsAt <= now) return 'This workshop has ended: your seat is being removed. Download anything you want to keep.';
  if (endsAt - now > WARN_BEFORE_MS) return '';
  const minutes = Math.max(1, Math.round((endsAt - now) / 60_000));
  const at = new Date(endsAt).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return `This workshop ends at ${at} (in ${minutes} min): save and download your work.`;
}

export function watchWorkshopEnd(banner: HTMLElement, pageUrl: string): void {
  const meUrl = new URL('../../../api/me', pageUrl);
  meUrl.search = '';
  const round = async (): Promise<void> => {
    let me: Me;
    try {
      const response = await fetch(meUrl, { credentials: 'same-origin', cache: 'no-store' });
      if (!response.ok) return; // not behind the workshop server, or not a learner's page
      me = (await response.json()) as Me;
    } catch {
      setTimeout(() => void round(), POLL_MS); // the network, not the answer: ask again
      return;
    }
    const endsAt = Date.parse(me.workshop?.ends_at ?? '');
    if (Number.isNaN(endsAt)) return;
    const text = endNotice(endsAt, me.workshop?.state ?? 'active', Date.now());
    banner.textContent = text;
    banner.hidden = text === '';
    if (me.workshop?.state !== 'ended') setTimeout(() => void round(), POLL_MS);
  };
  void round();
}
