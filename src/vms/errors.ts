// Domain errors of the VM lifecycle. The API maps each code to an HTTP status in one place.

export type VmErrorCode =
  | 'vm_not_found'
  | 'vm_exists'
  | 'at_capacity'
  | 'insufficient_memory'
  | 'create_failed'
  | 'delete_failed'
  /** Stop or start asked of a VM that is being made, deleted, or failed. */
  | 'vm_busy'
  | 'start_failed'
  | 'invalid_field'
  | 'template_not_found'
  | 'template_building';

export class VmError extends Error {
  constructor(
    readonly code: VmErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'VmError';
  }
}
