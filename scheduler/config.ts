// Reading the configuration from the process: flags > TUNEFLEET_* > stack.json > defaults.
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { resolveConfig, type Config, type Flags, type StackFile } from '../shared';

export function readStackFile(home: string): StackFile | null {
  const p = join(home, 'stack.json');
  if (!existsSync(p)) return null;
  try {
    return JSON.parse(readFileSync(p, 'utf8')) as StackFile;
  } catch {
    return null;
  }
}

export function loadConfig(flags: Flags = {}): Config {
  return resolveConfig(process.env, flags, homedir(), readStackFile);
}
