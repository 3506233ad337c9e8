// The editor: CodeMirror 6 on one file at a time, its language chosen by the file name, saved
// only over the version it opened (the file server's ETag).
import { EditorView, basicSetup } from 'codemirror';
import { keymap } from '@codemirror/view';
import { Compartment, EditorState, type Extension } from '@codemirror/state';
import { indentWithTab } from '@codemirror/commands';
import { javascript } from '@codemirror/lang-javascript';
import { python } from '@codemirror/lang-python';
import { html } from '@codemirror/lang-html';
import { css } from '@codemirror/lang-css';
import { json } from '@codemirror/lang-json';
import { markdown } from '@codemirror/lang-markdown';
import { java } from '@codemirror/lang-java';
import { cpp } from '@codemirror/lang-cpp';
import { rust } from '@codemirror/lang-rust';
import { go } from '@codemirror/lang-go';
import { sql } from '@codemirror/lang-sql';
import { yaml } from '@codemirror/lang-yaml';
import { oneDark } from '@codemirror/theme-one-dark';

const LANGUAGES: Record<string, () => Extension> = {
  js: () => javascript(),
  mjs: () => javascript(),
  cjs: () => javascript(),
  jsx: () => javascript({ jsx: true }),
  ts: () => javascript({ typescript: true }),
  mts: () => javascript({ typescript: true }),
  tsx: () => javascript({ typescript: true, jsx: true }),
  py: () => python(),
  html: () => html(),
  htm: () => html(),
  css: () => css(),
  json: () => json(),
  md: () => markdown(),
  java: () => java(),
  c: () => cpp(),
  h: () => cpp(),
  cc: () => cpp(),
  cpp: () => cpp(),
  hpp: () => cpp(),
  rs: () => rust(),
  go: () => go(),
  sql: () => sql(),
  yml: () => yaml(),
  yaml: () => yaml(),
};

export function languageFor(fileName: string): Extension {
  const extension = fileName.includes('.') ? (fileName.split('.').pop() ?? '').toLowerCase() : '';
  return LANGUAGES[extension]?.() ?? [];
}

export interface OpenFile {
  readonly path: string;
  /** The version on disk this text was read from or last saved as; null: not on disk yet. */
  etag: string | null;
}

export class Editor {
  private readonly view: EditorView;
  private readonly language = new Compartment();
  private readonly readOnly = new Compartment();
  private savedText = '';
  file: OpenFile | undefined;

  constructor(
    host: HTMLElement,
    private readonly onSave: () => void,
    private readonly onChange: (dirty: boolean) => void,
  ) {
    this.view = new EditorView({
      parent: host,
      state: this.stateFor('', [], true),
    });
  }

  private stateFor(text: string, language: Extension, readOnly: boolean): EditorState {
    return EditorState.create({
      doc: text,
      extensions: [
        basicSetup,
        oneDark,
        keymap.of([
          indentWithTab,
          {
            key: 'Mod-s',
            preventDefault: true,
            run: () => {
              this.onSave();
              return true;
            },
          },
        ]),
        this.language.of(language),
        this.readOnly.of(EditorState.readOnly.of(readOnly)),
        EditorView.updateListener.of((update) => {
          if (update.docChanged) this.onChange(this.dirty);
        }),
      ],
    });
  }

  open(path: string, text: string, etag: string | null, readOnly = false): void {
    this.file = { path, etag };
    this.savedText = text;
    this.view.setState(this.stateFor(text, languageFor(path), readOnly));
    this.onChange(false);
  }

  get text(): string {
    return this.view.state.doc.toString();
  }

  get dirty(): boolean {
    return this.file !== undefined && this.text !== this.savedText;
  }

  /** The text now on disk is `text`, at version `etag`. */
  saved(text: string, etag: string): void {
    if (this.file) this.file.etag = etag;
    this.savedText = text;
    this.onChange(this.dirty);
  }

  /** The open file was renamed or deleted. */
  moved(path: string | undefined): void {
    if (path === undefined) {
      this.file = undefined;
      this.view.setState(this.stateFor('', [], true));
    } else if (this.file) this.file = { path, etag: this.file.etag };
    this.onChange(this.dirty);
  }

  focus(): void {
    this.view.focus();
  }
}
