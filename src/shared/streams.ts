// Stream helpers shared by the proxy (traffic metrics) and the agent client (progress).
import { Transform } from 'node:stream';

/** A pass-through stream that reports the size of every chunk on its way, never holding more than one. */
export function countingStream(count: (bytes: number) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      count(chunk.length);
      callback(null, chunk);
    },
  });
}
