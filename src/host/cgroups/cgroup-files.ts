// Reading, writing and making cgroup files, with errors that name the file (and the value written).
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { VM_CONTROLLERS, type VmController } from './detect.ts';
import { CgroupError, errnoOf, errorText } from './errors.ts';

/** The directories of a cgroup's hierarchies, each once (with v2 cpu and memory are the same). */
export function distinct(dirs: Readonly<Record<VmController, string>>): string[] {
  return [...new Set(VM_CONTROLLERS.map((c) => dirs[c]))];
}

export async function readCgroupFile(file: string): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch (error) {
    throw new CgroupError(`cannot read ${file}: ${errorText(error)}`, file, undefined, errnoOf(error));
  }
}

export async function writeCgroupFile(file: string, value: string, hint = ''): Promise<void> {
  try {
    await writeFile(file, value);
  } catch (error) {
    throw new CgroupError(`cannot write "${value}" to ${file}: ${errorText(error)}${hint}`, file, value, errnoOf(error));
  }
}

/** mkdir of one cgroup; true when this call created it. An existing directory is fine. */
export async function mkdirCgroup(dir: string): Promise<boolean> {
  try {
    await mkdir(dir);
    return true;
  } catch (error) {
    if (errnoOf(error) === 'EEXIST') {
      if ((await stat(dir)).isDirectory()) return false;
      throw new CgroupError(`${dir} exists and is not a cgroup directory`, dir, undefined, 'EEXIST');
    }
    throw new CgroupError(`cannot create cgroup ${dir}: ${errorText(error)}`, dir, undefined, errnoOf(error));
  }
}
