// cgroup limits for VMM processes, on cgroup v1 and v2: see README.md.
export { CgroupError } from './errors.ts';
export {
  cgroupPathsOf,
  detectCgroupLayout,
  parseMountinfo,
  parseProcCgroup,
  readProcessCgroups,
  VM_CONTROLLERS,
  type CgroupLayout,
  type CgroupVersion,
  type DetectOptions,
  type MountEntry,
  type ProcessCgroups,
  type VmController,
} from './detect.ts';
export { CPU_PERIOD_US, memoryLimitBytes, validateLimits, vmCgroupSettings, type CgroupSetting, type VmLimits } from './limits.ts';
export {
  DEFAULT_PARENT_CGROUP,
  ensureParentCgroup,
  isSettingSupported,
  resolvePlacement,
  type CgroupPlacement,
  type PlacementInput,
  type ResolvedPlacement,
} from './placement.ts';
export {
  createVmCgroup,
  listVmCgroups,
  openVmCgroup,
  placeInCgroup,
  removeVmCgroup,
  type RemoveOptions,
  type VmCgroup,
  type VmCgroupSpec,
} from './vm-cgroup.ts';
