// Supervising one trainer process: spawn it with its topology in the environment, read
// its JSON-lines events, keep its stderr in a log file, interrupt it (SIGTERM: it
// checkpoints and exits), then kill it after a grace period. It runs below the agent's
// CPU and I/O priority (priority.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseTrainerLine, type TrainerEvent, type TunefleetError } from '../shared';
import { TRAINER_DIR, trainerEnv } from '../shared/trainerenv';
import { withPriority, type Priority } from './priority';

export interface TrainerRun {
  child: ChildProcess;
  /** exit code, or null when killed by a signal */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM now, SIGKILL after graceMs */
  interrupt(graceMs: number): void;
  /** SIGKILL the trainer's process group now (a fenced or abandoned attempt) */
  kill(): void;
  stderrTail(): string;
}

export type TrainerCommand = 'train' | 'evaluate' | 'generate' | 'chat';

export interface TrainerOptions {
  python: string;
  command: TrainerCommand;
  configPath: string;
  /** a pipe to the trainer's stdin (a chat's turns); otherwise it reads nothing */
  stdin?: boolean;
  logPath: string;
  env?: Record<string, string>;
  /** processes of a data-parallel run (torchrun --standalone, one per device); 1 or absent: the trainer alone */
  processes?: number;
  /** a gang member: node `rank` of `count` hosts, meeting at rank 0's address and port (torchrun --nnodes) */
  nodes?: { count: number; rank: number; address: string; port: number };
  /** how far below the agent the trainer runs */
  priority: Priority;
  onEvent: (e: TrainerEvent) => void;
  onInvalid: (e: TunefleetError) => void;
}

export function runTrainer(o: TrainerOptions): TrainerRun {
  const processes = o.processes ?? 1;
  const args = ['-m', 'tunefleet_trainer', o.command, '--config', o.configPath];
  if (processes > 1 || o.nodes) args.push('--processes', String(processes));
  if (o.nodes) {
    const n = o.nodes;
    args.push('--nnodes', String(n.count), '--node-rank', String(n.rank));
    args.push('--master-addr', n.address, '--master-port', String(n.port));
  }
  const { argv } = withPriority([o.python, ...args], o.priority);
  const tail: string[] = [];
  const child = spawn(argv[0] as string, argv.slice(1), {
    cwd: TRAINER_DIR,
    // TUNEFLEET_AGENT_PID: the trainer dies with this process (see die_with_agent in __main__.py)
    env: {
      ...trainerEnv(process.env),
      PYTHONPATH: TRAINER_DIR,
      PYTHONUNBUFFERED: '1',
      TUNEFLEET_AGENT_PID: String(process.pid),
      ...o.env,
    },
    stdio: [o.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    // its own process group: a kill reaches whatever the trainer started (data loader workers)
    detached: true,
  });
  const log = createWriteStream(o.logPath, { flags: 'a' });
  // a full disk must not take the agent down with an unhandled stream error: the log is
  // best effort, the trainer's events (stdout) are what counts
  log.on('error', (e) => tail.push(`[agent] trainer.log: ${e.message}\n`));
  child.stderr?.on('data', (b: Buffer) => {
    log.write(b);
    tail.push(b.toString('utf8'));
    while (tail.length > 40) tail.shift();
  });
  let lineNo = 0;
  const rl = createInterface({ input: child.stdout! });
  rl.on('line', (line) => {
    lineNo += 1;
    const parsed = parseTrainerLine(line, lineNo);
    if (parsed.kind === 'event') o.onEvent(parsed.event);
    else if (parsed.kind === 'invalid') o.onInvalid(parsed.error);
    else log.write(`[stdout] ${parsed.text}\n`);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
    let done = false;
    const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
      if (done) return;
      done = true;
      // wait for stdout to be fully read so the last events are not lost
      rl.once('close', () => log.end(() => res({ code, signal })));
      if ((rl as unknown as { closed?: boolean }).closed) log.end(() => res({ code, signal }));
    };
    child.on('exit', finish);
    child.on('error', (e) => {
      tail.push(`failed to start ${o.python}: ${e.message}`);
      rl.close();
      finish(127, null);
    });
  });
  let killTimer: NodeJS.Timeout | null = null;
  const signalGroup = (sig: NodeJS.Signals): void => {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
    try {
      process.kill(-child.pid, sig);
    } catch {
      child.kill(sig);
    }
  };
  void exited.then(() => killTimer && clearTimeout(killTimer));
  return {
    child,
    exited,
    interrupt(graceMs) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      signalGroup('SIGTERM');
      killTimer ??= setTimeout(() => signalGroup('SIGKILL'), graceMs);
    },
    kill: () => signalGroup('SIGKILL'),
    stderrTail: () => tail.join('').split('\n').slice(-15).join('\n'),
  };
}
