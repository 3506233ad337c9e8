// The page's one modal dialog: a question with buttons, optionally with a text field (in the page,
// not window.prompt, so it looks like the page and keyboard users keep their focus).

export interface DialogChoice<T extends string> {
  readonly value: T;
  readonly label: string;
}

const dialog = (): HTMLDialogElement => document.getElementById('dialog') as HTMLDialogElement;

function show<T extends string>(
  message: string,
  choices: readonly DialogChoice<T>[],
  input: string | undefined,
): Promise<{ choice: T | 'cancel'; text: string }> {
  const element = dialog();
  const field = element.querySelector<HTMLInputElement>('#dialog-input');
  const buttons = element.querySelector<HTMLElement>('#dialog-buttons');
  const text = element.querySelector<HTMLElement>('#dialog-message');
  if (!field || !buttons || !text) throw new Error('the page has no dialog');
  text.textContent = message;
  field.hidden = input === undefined;
  field.value = input ?? '';
  buttons.replaceChildren(
    ...[...choices, { value: 'cancel' as const, label: 'Cancel' }].map((choice) => {
      const button = document.createElement('button');
      button.value = choice.value;
      button.textContent = choice.label;
      return button;
    }),
  );
  element.returnValue = 'cancel';
  element.showModal();
  if (input !== undefined) field.select();
  return new Promise((resolve) => {
    element.addEventListener(
      'close',
      () => resolve({ choice: (element.returnValue || 'cancel') as T | 'cancel', text: field.value.trim() }),
      { once: true },
    );
  });
}

/** Asks for a name; null when cancelled or empty. */
export async function askText(message: string, initial: string, okLabel: string): Promise<string | null> {
  field().onkeydown = (event) => {
    if (event.key === 'Enter') {
      event.preventDefault();
      dialog().close('ok');
    }
  };
  const { choice, text } = await show(message, [{ value: 'ok', label: okLabel }], initial);
  return choice === 'ok' && text !== '' ? text : null;
}

export async function choose<T extends string>(message: string, choices: readonly DialogChoice<T>[]): Promise<T | 'cancel'> {
  return (await show(message, choices, undefined)).choice;
}

function field(): HTMLInputElement {
  return dialog().querySelector<HTMLInputElement>('#dialog-input') as HTMLInputElement;
}
