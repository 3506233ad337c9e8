// Content-Type by file extension: a deliberately small map.
import path from 'node:path';

const TEXT = 'text/plain; charset=utf-8';

const TYPES: Readonly<Record<string, string>> = {
  // text and source code shown as plain text
  '.txt': TEXT,
  '.md': TEXT,
  '.markdown': TEXT,
  '.log': TEXT,
  '.csv': 'text/csv; charset=utf-8',
  '.tsv': TEXT,
  '.py': TEXT,
  '.ts': TEXT,
  '.tsx': TEXT,
  '.jsx': TEXT,
  '.go': TEXT,
  '.rs': TEXT,
  '.java': TEXT,
  '.kt': TEXT,
  '.c': TEXT,
  '.h': TEXT,
  '.cc': TEXT,
  '.cpp': TEXT,
  '.hpp': TEXT,
  '.rb': TEXT,
  '.php': TEXT,
  '.sh': TEXT,
  '.bash': TEXT,
  '.zsh': TEXT,
  '.sql': TEXT,
  '.r': TEXT,
  '.swift': TEXT,
  '.lua': TEXT,
  '.pl': TEXT,
  '.yaml': TEXT,
  '.yml': TEXT,
  '.toml': TEXT,
  '.ini': TEXT,
  '.cfg': TEXT,
  '.conf': TEXT,
  '.env': TEXT,
  '.gitignore': TEXT,
  '.dockerfile': TEXT,
  '.ipynb': 'application/json; charset=utf-8',
  // web
  '.html': 'text/html; charset=utf-8',
  '.htm': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.cjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.xml': 'application/xml',
  '.svg': 'image/svg+xml',
  '.wasm': 'application/wasm',
  // media
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.ico': 'image/x-icon',
  '.bmp': 'image/bmp',
  '.mp3': 'audio/mpeg',
  '.wav': 'audio/wav',
  '.ogg': 'audio/ogg',
  '.mp4': 'video/mp4',
  '.webm': 'video/webm',
  // documents and archives
  '.pdf': 'application/pdf',
  '.zip': 'application/zip',
  '.gz': 'application/gzip',
  '.tgz': 'application/gzip',
  '.tar': 'application/x-tar',
};

const TEXT_NAMES = new Set(['makefile', 'dockerfile', 'readme', 'license', 'procfile']);

export function contentTypeFor(fileName: string): string {
  const ext = path.extname(fileName).toLowerCase();
  const byExt = ext === '' ? (fileName.startsWith('.') ? TYPES[fileName.toLowerCase()] : undefined) : TYPES[ext];
  if (byExt !== undefined) return byExt;
  if (TEXT_NAMES.has(fileName.toLowerCase())) return TEXT;
  return 'application/octet-stream';
}
