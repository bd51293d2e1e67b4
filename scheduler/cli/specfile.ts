// A job spec file and the data files it names, checked before anything is contacted:
// the spec's schema, and data paths that stay inside the spec's directory.
import { existsSync, realpathSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import { ErrorCode, TunefleetError, checkJobSpec, parseYamlMapping, type JobSpec } from '../../shared';

export interface LoadedSpec {
  spec: JobSpec;
  /** the file's mapping as written, before defaults (what a sweep varies) */
  raw: Record<string, unknown>;
  file: string;
  datasetPath: string;
  evalPath: string | null;
}

/** A spec file's text; one that cannot be read is named with the reason. */
export async function readSpecText(file: string, what = 'spec'): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    throw new TunefleetError(
      ErrorCode.SpecUnreadable,
      `cannot read the ${what} (${(e as NodeJS.ErrnoException).code ?? String(e)})`,
      { file },
    );
  }
}

/** Parse and check a spec file and the files it names. No stack needed. */
export async function loadSpecFile(file: string): Promise<LoadedSpec> {
  const { data: raw, lineOf } = parseYamlMapping(await readSpecText(file), file);
  const spec = checkJobSpec(raw, file, lineOf);
  const base = dirname(resolve(file));
  // data files live in the spec's directory or below it: no absolute paths, no '..' out of
  // it, no symlink that leads out of it (a spec from someone else cannot upload ~/.ssh)
  const root = realpathSync(base);
  const local = (p: string, field: string): string => {
    if (isAbsolute(p))
      throw new TunefleetError(
        ErrorCode.SpecInvalid,
        `'${p}' is an absolute path; give a path relative to the spec's directory (${base})`,
        { file, field },
      );
    const full = resolve(base, p);
    const rel = relative(base, full);
    if (rel === '' || rel.startsWith('..') || isAbsolute(rel))
      throw new TunefleetError(ErrorCode.SpecInvalid, `'${p}' leaves the spec's directory (${base})`, { file, field });
    if (!existsSync(full)) throw new TunefleetError(ErrorCode.DatasetMissing, `no such file: ${full}`, { file, field });
    const real = realpathSync(full);
    if (relative(root, real).startsWith('..'))
      throw new TunefleetError(
        ErrorCode.SpecInvalid,
        `'${p}' is a symlink to ${real}, outside the spec's directory (${base})`,
        { file, field },
      );
    if (!statSync(real).isFile())
      throw new TunefleetError(ErrorCode.DatasetMissing, `not a regular file: ${full}`, { file, field });
    return full;
  };
  return {
    spec,
    raw,
    file,
    datasetPath: local(spec.dataset.path, 'dataset.path'),
    evalPath: spec.dataset.eval_path ? local(spec.dataset.eval_path, 'dataset.eval_path') : null,
  };
}

export function newJobId(name: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:T]/g, '').slice(2, 14);
  const rand = Math.floor(Math.random() * 36 ** 4)
    .toString(36)
    .padStart(4, '0');
  return `${name}-${stamp}-${rand}`.slice(0, 63);
}
