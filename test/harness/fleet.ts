// Helpers for tests that run several real agent processes: start them (capturing their
// log lines), wait for a condition, write a tiny job, read a job's commit record.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { expect } from 'chai';
import { chmodSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { COMMITS_BUCKET, type CommitRecord } from '../../shared';
import type { JobClient } from '../../scheduler/cli/client';
import { openFleet } from '../../scheduler/cli/fleetcmd';
import { ROOT, TINY_MODEL, cliEnv, installedHome, natsPids, type TestStack } from './stack';
import { addAgent } from '../../infra/secrets';
import { reloadNats } from '../../infra/services';

/**
 * Call `check` until it answers true, one call at a time, 100 ms apart; throws naming `what`
 * after `ms`, with what `explain` says of the state it was waiting on. Returns the wait in ms. Checks read through the
 * client library (not a CLI process) unless the CLI is what the test checks.
 */
export async function until(
  what: string,
  check: () => Promise<boolean>,
  ms: number,
  explain?: () => Promise<string>,
): Promise<number> {
  const t0 = Date.now();
  while (!(await check())) {
    if (Date.now() - t0 > ms) {
      const seen = explain ? await explain().catch((e: unknown) => `(explain failed: ${String(e)})`) : null;
      throw new Error(`${what}: not within ${ms} ms${seen ? `; ${seen}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return Date.now() - t0;
}

/** Each live agent's state in the fleet view (what `tunefleet fleet` shows), read through the client library. */
export async function fleetStates(client: JobClient): Promise<Map<string, string>> {
  const view = await openFleet(await client.nats());
  try {
    return new Map(view.snapshot().map((e) => [e.advert.agent_id, e.advert.state]));
  } finally {
    await view.stop();
  }
}

/** Ids of the agents the fleet view has as ready. */
export async function readyAgents(client: JobClient): Promise<string[]> {
  return [...(await fleetStates(client))].filter(([, s]) => s === 'ready').map(([id]) => id);
}

/** `tunefleet agent start` processes, by id, with their output lines kept. */
export class AgentProcesses {
  readonly procs = new Map<string, ChildProcess>();
  readonly logs = new Map<string, string[]>();
  constructor(
    private readonly stack: () => TestStack,
    private readonly args: string[] = [],
  ) {}

  /**
   * Starts agent `id`, labelled host=<id> (a spec's `selector: {host: ...}` pins a job to it), with its own
   * credentials (agent-<id>, made in the stack's secrets the first time).
   */
  async start(id: string, extra: { args?: string[]; env?: NodeJS.ProcessEnv } = {}): Promise<ChildProcess> {
    const stack = this.stack();
    if (await addAgent(stack.home, id)) await reloadNats(stack.home, natsPids(stack), stack.cfg.natsUrl, `agent-${id}`);
    const child = spawn(
      process.execPath,
      [
        join(ROOT, 'bin', 'tunefleet'),
        'agent',
        'start',
        '--id',
        id,
        '--label',
        `host=${id}`,
        '--advert-interval',
        '500',
        // several agents on one host: each serves its metrics on a port of its own
        '--metrics-address',
        '127.0.0.1:0',
        ...this.args,
        ...(extra.args ?? []),
      ],
      {
        env: { ...cliEnv(this.stack()), ...extra.env },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const lines: string[] = [];
    this.logs.set(id, lines);
    for (const s of [child.stdout, child.stderr])
      s?.on('data', (b: Buffer) => lines.push(...b.toString().split('\n').filter(Boolean)));
    this.procs.set(id, child);
    return child;
  }

  get(id: string): ChildProcess | undefined {
    return this.procs.get(id);
  }

  log(id: string): string {
    return (this.logs.get(id) ?? []).join('\n');
  }

  killAll(): void {
    for (const a of this.procs.values()) {
      if (a.exitCode !== null) continue;
      a.kill('SIGCONT');
      a.kill('SIGKILL');
    }
  }
}

/**
 * A LoRA job on the tiny model over `records` short text records, in a new directory; returns the spec path.
 * Unpacked: these jobs are about placement, leases and recovery, timed in steps of a few records (packed, each
 * step would take the whole dataset in 512-token blocks, ~20x the work); e2e runs the default, packed.
 */
export function tinyJob(name: string, maxSteps: number, checkpointEvery: number, records = 48): string {
  const dir = mkdtempSync(join(tmpdir(), `tunefleet-${name}-`));
  writeFileSync(
    join(dir, 'data.jsonl'),
    Array.from({ length: records }, (_, i) =>
      JSON.stringify({ text: `record ${i} of the ${name} test, word ${i * 7}` }),
    ).join('\n') + '\n',
  );
  writeFileSync(
    join(dir, 'job.yaml'),
    `name: ${name}\nmodel: ${TINY_MODEL}\nmethod: lora\ndataset: {path: data.jsonl, eval_fraction: 0.1, dedup: {near: false}}\ntraining: {max_steps: ${maxSteps}, batch_size: 4, learning_rate: 0.01, checkpoint_every: ${checkpointEvery}, packing: false}\nevaluation: {exact_match: false}\n`,
  );
  return join(dir, 'job.yaml');
}

export async function commitOf(client: JobClient, jobId: string): Promise<CommitRecord | null> {
  const e = await (await (await client.nats()).kv(COMMITS_BUCKET)).get(jobId);
  return e && e.operation === 'PUT' ? e.json<CommitRecord>() : null;
}

/** Every write of the job's commit record, oldest first (the bucket keeps 64 per key). */
export async function commitHistory(client: JobClient, jobId: string): Promise<CommitRecord[]> {
  const kv = await (await client.nats()).kv(COMMITS_BUCKET);
  const out: CommitRecord[] = [];
  for await (const e of await kv.history({ key: jobId })) if (e.operation === 'PUT') out.push(e.json<CommitRecord>());
  return out;
}

/** (epoch, step) never goes backwards, and no older epoch writes after a newer one. */
export function assertMonotonic(h: CommitRecord[]): void {
  for (let i = 1; i < h.length; i++) {
    const [a, b] = [h[i - 1] as CommitRecord, h[i] as CommitRecord];
    expect(b.epoch, `commit ${i}: epoch ${a.epoch} -> ${b.epoch}`).to.be.at.least(a.epoch);
    expect(b.step, `commit ${i}: step ${a.step} -> ${b.step} (epochs ${a.epoch} -> ${b.epoch})`).to.be.at.least(a.step);
  }
}

/** Max |a - b| over the tensors of two downloaded adapters, by the trainer's Python. */
export function adapterDiff(a: string, b: string): number {
  const py = join(installedHome(), 'bin', 'python');
  const out = execFileSync(
    py,
    [
      '-c',
      `
import sys
from safetensors.torch import load_file
x, y = (load_file(p + "/adapter_model.safetensors") for p in sys.argv[1:3])
assert x.keys() == y.keys(), (sorted(x), sorted(y))
print(max(float((x[k] - y[k]).abs().max()) for k in x))`,
      a,
      b,
    ],
    { encoding: 'utf8' },
  );
  return Number(out.trim());
}

/**
 * A written-out GPU host for TUNEFLEET_NVIDIA_SMI: `count` A100s of `mib` MiB each, idle, answering the CSV query and
 * -L (no -q -x, no topo: those fail as on a host whose nvidia-smi lacks them). Returns the executable's path.
 */
export function fakeGpuHost(count: number, mib: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'tunefleet-gpu-host-'));
  const uuid = (i: number): string => `GPU-0000000${i}-aaaa-bbbb-cccc-00000000000${i}`;
  const csv = Array.from(
    { length: count },
    (_, i) => `${i}, ${uuid(i)}, NVIDIA A100-SXM4-80GB, ${mib}, 0, ${mib}, 0, 30, 60.0, 8.0, 535.161.08`,
  );
  const list = Array.from({ length: count }, (_, i) => `GPU ${i}: NVIDIA A100-SXM4-80GB (UUID: ${uuid(i)})`);
  writeFileSync(join(dir, 'query.csv'), csv.join('\n') + '\n');
  writeFileSync(join(dir, 'list.txt'), list.join('\n') + '\n');
  const smi = join(dir, 'nvidia-smi');
  writeFileSync(
    smi,
    `#!/bin/sh\ncase "$1" in\n  --query-gpu=*) cat '${dir}/query.csv' ;;\n  -L) cat '${dir}/list.txt' ;;\n` +
      '  *) echo "not supported" >&2; exit 3 ;;\nesac\n',
  );
  chmodSync(smi, 0o755);
  return smi;
}

/**
 * A recorded (or written-out) host for TUNEFLEET_NVIDIA_SMI: replays test/fixtures/nvidia-smi/<name>.csv, .xml, .list
 * and .topo for the CSV query, -q -x, -L and topo -m; a file that is not there fails that command, as on a host whose
 * nvidia-smi lacks it. Returns the executable's path.
 */
export function recordedGpuHost(name: string): string {
  const base = join(ROOT, 'test', 'fixtures', 'nvidia-smi', name);
  const dir = mkdtempSync(join(tmpdir(), 'tunefleet-gpu-host-'));
  const smi = join(dir, 'nvidia-smi');
  const replay = (ext: string): string => `[ -f '${base}.${ext}' ] && exec cat '${base}.${ext}'; exit 3`;
  writeFileSync(
    smi,
    `#!/bin/sh
case "$1" in
  --query-gpu=*) ${replay('csv')} ;;
  -q) ${replay('xml')} ;;
` +
      `  -L) ${replay('list')} ;;
  topo) ${replay('topo')} ;;
  *) echo "not supported" >&2; exit 3 ;;
esac
`,
  );
  chmodSync(smi, 0o755);
  return smi;
}

/** The environment of a running process (Linux /proc), or null when it is gone. */
export function processEnv(pid: number): Record<string, string> | null {
  try {
    const raw = readFileSync(`/proc/${pid}/environ`, 'utf8');
    return Object.fromEntries(
      raw
        .split('\0')
        .filter(Boolean)
        .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
    );
  } catch {
    return null;
  }
}

/**
 * What in `texts` (and in the stack's log files) is a credential: an nkey seed of the stack's secrets, a line of one
 * of its private keys, or a PEM private key at all. Each finding says which text and which secret, not the secret.
 */
export function credentialLeaks(home: string, texts: Record<string, string>): string[] {
  const dir = join(home, 'secrets');
  const secrets: [string, string][] = readdirSync(dir).flatMap((f): [string, string][] => {
    const body = readFileSync(join(dir, f), 'utf8');
    if (f.endsWith('.nk')) return [[f, body.trim()]];
    if (f.endsWith('.key')) return [[f, body.split('\n')[1] ?? '']];
    return [];
  });
  const logs = Object.fromEntries(
    readdirSync(join(home, 'logs')).map((f) => [`logs/${f}`, readFileSync(join(home, 'logs', f), 'utf8')]),
  );
  const found: string[] = [];
  for (const [where, t] of Object.entries({ ...logs, ...texts })) {
    for (const [name, secret] of secrets) if (secret.length > 20 && t.includes(secret)) found.push(`${where}: ${name}`);
    if (t.includes('PRIVATE KEY')) found.push(`${where}: a PEM private key`);
  }
  return found;
}
