// The console's first load at fleet scale: 100 agents (8 GPUs each, adverts written to the
// real adverts bucket every 2 s by test/bench/publishers.ts) and 1,000 real jobs in the
// real Temporal dev server, run by a real control worker: 950 that failed at placement (a
// base model no agent has: NO_AGENT_FITS) and 50 placed on the simulated agents and
// training there (no agent process takes their work; their schedule-to-start timeout is
// set past the bench). The console runs as its own process (`tunefleet ui`). Headless
// Chromium (Debian's, through playwright-core) opens each page in a fresh, logged-in
// browser context (nothing cached); the time is the page's own, from the navigation's
// start to the page drawn: 100 host cards on /fleet, 50 rows on /jobs (the newest:
// training) and on /jobs?state=failed. Baselines measured in the same run: an empty shell
// (a not-found page: the same script and styles, no data), the JSON API the live stream
// reads, and the same read the CLI makes (JobClient.list; the fleet view's snapshot).
// Prints a table and adds it to test/bench/RESULTS.md.
//
//   npm run bench:console        (BENCH_LOADS=N loads per page, default 5)
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { JobClient, loadSpecFile } from '../../scheduler/cli/client';
import { openFleet } from '../../scheduler/cli/fleetcmd';
import { uiToken } from '../../scheduler/ui/start';
import { startControlWorker, type RunningWorker } from '../../scheduler/worker';
import { until } from '../harness/fleet';
import { ROOT, TINY_MODEL, cliEnv, installedHome, startTestStack, type TestStack } from '../harness/stack';
import { recordResult } from './results';

const AGENTS = 100;
const FAILED = 950;
const RUNNING = 50;
const LOADS = Number(process.env.BENCH_LOADS ?? 5);

function job(dir: string, name: string, model: string): string {
  writeFileSync(
    join(dir, 'data.jsonl'),
    Array.from({ length: 40 }, (_, i) => JSON.stringify({ text: `record ${i} of the console bench, word ${i * 7}` }))
      .join('\n')
      .concat('\n'),
  );
  const path = join(dir, `${name}.yaml`);
  writeFileSync(
    path,
    `name: ${name}\nmodel: ${model}\nmethod: lora\n` +
      'dataset: {path: data.jsonl, eval_fraction: 0.1, dedup: {near: false}}\n' +
      'training: {max_steps: 20, batch_size: 4, learning_rate: 0.01, checkpoint_every: 10, packing: false}\n' +
      'evaluation: {exact_match: false}\n',
  );
  return path;
}

/** Run `fn` over `items` with at most `n` at a time. */
async function pool<T>(items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < items.length) await fn(items[next++] as T);
    }),
  );
}

/** fineTune workflows matching `where`, counted from visibility alone */
async function count(c: JobClient, where: string): Promise<number> {
  let n = 0;
  for await (const _ of c.client.workflow.list({ query: `WorkflowType = 'fineTune' AND ${where}` })) n += 1;
  return n;
}

async function waitFor(what: string, check: () => Promise<boolean>, ms = 1_800_000): Promise<void> {
  const t0 = Date.now();
  while (!(await check())) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, 2_000));
  }
}

/** first loads: by the page's own clock, and as the test driver saw them (its polls and round trips added) */
interface Load {
  page: number[];
  driver: number[];
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

async function timed(n: number, fn: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    // past the console's shared-read window, so each is read afresh, not handed the previous answer
    await new Promise((r) => setTimeout(r, 700));
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
  }
  return out;
}

async function main(): Promise<void> {
  let stack: TestStack | undefined;
  let worker: RunningWorker | undefined;
  let client: JobClient | undefined;
  let publishers: ReturnType<typeof execFile> | undefined;
  let ui: ChildProcess | undefined;
  try {
    stack = await startTestStack();
    const s = stack;
    worker = await startControlWorker(s.cfg, () => {});
    // the jobs placed on simulated agents wait there for the whole bench (no agent process takes their work)
    client = await JobClient.connect({ ...s.cfg, scheduleToStartS: 3600 }, 'cli');
    const c = client;
    // 100 simulated agents advertising every 2 s for as long as the bench runs
    publishers = execFile(process.execPath, [
      join(__dirname, 'publishers.js'),
      s.cfg.natsUrl,
      String(AGENTS),
      '2000',
      String(3_600_000),
      '4',
      s.home,
    ]);
    const fleet = await openFleet(await c.nats());
    await until(`${AGENTS} agents`, async () => fleet.snapshot().length >= AGENTS, 60_000);

    const dir = mkdtempSync(join(tmpdir(), 'tunefleet-console-bench-'));
    const failing = await loadSpecFile(job(dir, 'absent', TINY_MODEL));
    const placed = await loadSpecFile(job(dir, 'placed', 'SmolLM2-135M-Instruct'));
    const t0 = Date.now();
    const ids = Array.from({ length: FAILED }, (_, i) => `bench-failed-${String(i).padStart(4, '0')}`);
    await pool(ids, 8, async (id) => void (await c.submit(failing, id)));
    await waitFor(`${FAILED} jobs failed`, async () => (await count(c, "ExecutionStatus = 'Failed'")) >= FAILED);
    const running = Array.from({ length: RUNNING }, (_, i) => `bench-running-${String(i).padStart(2, '0')}`);
    await pool(running, 8, async (id) => void (await c.submit(placed, id)));
    await waitFor(
      `${RUNNING} jobs training`,
      async () => (await count(c, "ExecutionStatus = 'Running' AND TunefleetState = 'training'")) >= RUNNING,
    );
    const setupS = (Date.now() - t0) / 1000;
    console.log(`set up ${FAILED + RUNNING} jobs in ${setupS.toFixed(0)} s`);

    // the console as it is deployed: its own process (`tunefleet ui`), beside the control worker
    ui = spawn(process.execPath, [join(ROOT, 'bin', 'tunefleet'), 'ui', '--address', '127.0.0.1:0'], {
      env: cliEnv(s),
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const url = await new Promise<string>((res, rej) => {
      let out = '';
      ui?.stdout?.on('data', (b: Buffer) => {
        out += b.toString();
        const m = /console on (http:\/\/[^/\s]+)\/fleet\?token=/.exec(out);
        if (m?.[1]) res(m[1]);
      });
      ui?.on('exit', (code) => rej(new Error(`tunefleet ui exited with ${code}: ${out}`)));
    });
    const viewer = uiToken(s.home, 'viewer');
    const browser = await chromium.launch({
      executablePath: join(installedHome(), 'bin', 'chromium'),
      args: ['--no-sandbox', '--disable-dev-shm-usage'],
    });
    const auth = { headers: { authorization: `Bearer ${viewer}` } };
    /**
     * `n` first loads of `path`, each in a fresh browser context (no cache) that is logged in (the console's cookie):
     * the page's own clock from the navigation's start to the moment its DOM shows `count` of `sel` (a mutation
     * observer put in before the page's script), and as the test driver saw it (navigation to its poll seeing them).
     */
    const loads = async (n: number, path: string, sel: string, count: number): Promise<Load> => {
      const out: Load = { page: [], driver: [] };
      for (let i = 0; i < n; i++) {
        await new Promise((r) => setTimeout(r, 700)); // past the console's shared-read window
        const ctx = await browser.newContext({ viewport: { width: 1280, height: 860 } });
        await ctx.addCookies([{ name: 'tunefleet_ui', value: viewer, url }]);
        const page = await ctx.newPage();
        await page.addInitScript(
          `new MutationObserver(() => { if (!window.__drawn && document.querySelectorAll(${JSON.stringify(sel)})` +
            `.length >= ${count}) window.__drawn = performance.now(); })` +
            '.observe(document, { childList: true, subtree: true });',
        );
        const t0 = performance.now();
        await page.goto(`${url}${path}`);
        await page.waitForFunction('window.__drawn !== undefined');
        out.driver.push(performance.now() - t0);
        out.page.push(Number(await page.evaluate('window.__drawn')));
        await ctx.close();
      }
      return out;
    };
    const rows: { page: string; load: Load; api: number[]; cli: number[]; cliLabel: string }[] = [];
    let shell: Load = { page: [], driver: [] };
    try {
      await loads(1, '/fleet', '[data-agent]', AGENTS); // warm the browser and the server's code once
      // the floor: the same shell, script and styles, drawing a not-found page (no data read)
      shell = await loads(LOADS, '/nothing-here', '#notfound', 1);
      rows.push({
        page: `/fleet (${AGENTS} agents, ${AGENTS * 8} GPUs)`,
        load: await loads(LOADS, '/fleet', '[data-agent]', AGENTS),
        api: await timed(LOADS, () => fetch(`${url}/api/fleet`, auth).then((r) => r.json())),
        cli: await timed(LOADS, async () => fleet.snapshot()),
        cliLabel: 'fleet view snapshot',
      });
      rows.push({
        page: `/jobs (newest 50 of 1,000: training)`,
        load: await loads(LOADS, '/jobs', 'tr[data-job]', 50),
        api: await timed(LOADS, () => fetch(`${url}/api/jobs`, auth).then((r) => r.json())),
        cli: await timed(LOADS, () => c.list({ limit: 50 })),
        cliLabel: 'tunefleet list --limit 50',
      });
      rows.push({
        page: `/jobs?state=failed (50 of 950)`,
        load: await loads(LOADS, '/jobs?state=failed', 'tr[data-job]', 50),
        api: await timed(LOADS, () => fetch(`${url}/api/jobs?state=failed`, auth).then((r) => r.json())),
        cli: await timed(LOADS, () => c.list({ state: 'failed', limit: 50 })),
        cliLabel: 'tunefleet list --state failed --limit 50',
      });
    } finally {
      await browser.close();
      await fleet.stop();
    }
    const f = (x: number): string => x.toFixed(0);
    const machine = `${cpus().length} × ${cpus()[0]?.model.trim() ?? 'cpu'}, node ${process.version}`;
    const table = [
      `### Console first load, ${new Date().toISOString().slice(0, 10)} — ${machine}, Temporal dev server, Debian chromium`,
      '',
      `| page | first load median ms | max ms | as the driver saw it, median ms | load / empty shell | ` +
        'JSON API (live rows) median ms | CLI read | CLI median ms |',
      '|---|---|---|---|---|---|---|---|',
      `| empty shell (a not-found page: script, styles; no data) | ${f(median(shell.page))} | ` +
        `${f(Math.max(...shell.page))} | ${f(median(shell.driver))} | 1.00 | - | - | - |`,
      ...rows.map(
        (r) =>
          `| ${r.page} | ${f(median(r.load.page))} | ${f(Math.max(...r.load.page))} | ${f(median(r.load.driver))} | ` +
          `${(median(r.load.page) / median(shell.page)).toFixed(2)} | ${f(median(r.api))} | ${r.cliLabel} | ` +
          `${median(r.cli).toFixed(1)} |`,
      ),
      '',
      `${AGENTS} simulated agents with 8 GPUs each advertising every 2 s; ${FAILED + RUNNING} real fineTune workflows ` +
        `(${FAILED} failed at placement, ${RUNNING} training on simulated agents), set up in ${setupS.toFixed(0)} s. ` +
        `The console runs as its own process (\`tunefleet ui\`). ${LOADS} loads per page, each in a fresh, logged-in ` +
        "browser context (its cookie; nothing cached), timed by the page's own clock from the navigation's start " +
        '(the driver column adds its own polling and round trips) to the page drawn (every host card / every row: a ' +
        'jobs page first draws the rows visibility has — state, agent, attempt — and its live stream then fills in ' +
        'progress, queue position, eval loss and errors, at the cost in the JSON API column). The target is a first ' +
        'load under 1 s.',
    ].join('\n');
    console.log(table);
    recordResult(table);
  } finally {
    publishers?.kill();
    ui?.kill();
    await client?.close();
    await worker?.stop();
    await stack?.stop();
  }
}

if (require.main === module)
  void main().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
