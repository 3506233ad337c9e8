// The two interpreters the host network keeps open (see CommandSession): iproute2 and nftables.
import { CommandSession } from '../shared/command-session.ts';

/** `ip -batch -` with JSON output; `link show dev lo` (always there) ends each group. */
export function ipSession(): CommandSession {
  const args = ['-json', '-details', '-force', '-batch', '-'];
  return new CommandSession({
    file: 'ip',
    args,
    marker: 'link show dev lo',
    isMarkerLine: (line) => line.startsWith('[{') && line.includes('"ifname":"lo"'),
    isFailureLine: (line) => line.startsWith('Command failed '),
    oneOffArgs: args,
  });
}

/** `nft -i` (its interactive mode reads commands from a pipe as well); `describe` needs no kernel. */
export function nftSession(): CommandSession {
  return new CommandSession({
    file: 'nft',
    args: ['-i'],
    marker: 'describe meta length',
    // `includes`: an nft built with readline may put its prompt before a line.
    isMarkerLine: (line) => line.includes('meta expression, datatype integer'),
    isFailureLine: (line) => line.includes('Error: '),
    oneOffArgs: ['-f', '-'],
  });
}
