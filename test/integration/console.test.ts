// The operator's console in a real browser: Debian's chromium driven by playwright-core
// against `tunefleet ui` (in this process) on a real two-agent stack. Screenshots of each
// page at desktop and phone width go to test-results/console/ (TUNEFLEET_ARTIFACTS to move
// them).
import { expect } from 'chai';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { loadSpecFile } from '../../scheduler/cli/client';
import { startUi, type RunningUi } from '../../scheduler/ui/start';
import { fleetStates, tinyJob, until } from '../harness/fleet';
import { useRunningFleet } from '../harness/running-fleet';
import { ROOT, installedHome, runCli } from '../harness/stack';

const ARTIFACTS = process.env.TUNEFLEET_ARTIFACTS ?? join(ROOT, 'test-results', 'console');
const SIZES = { desktop: { width: 1280, height: 860 }, phone: { width: 390, height: 844 } };

describe('console - the web dashboard in headless Chromium', function () {
  this.timeout(600_000);
  const fleet = useRunningFleet({ agents: ['ui-a', 'ui-b'], readyMs: 60_000 });
  let ui: RunningUi;
  let browser: Browser;
  let page: Page;
  const shots: string[] = [];

  before(async () => {
    ui = await startUi(fleet.stack.cfg, { host: '127.0.0.1', port: 0 }, () => {});
    browser = await chromium.launch({
      executablePath: join(installedHome(), 'bin', 'chromium'),
      // root in a container: chromium's sandbox needs user namespaces it may not have
      args: ['--no-sandbox', '--disable-dev-shm-usage'],
    });
    page = await browser.newPage({ viewport: SIZES.desktop });
    // the dialogs the actions open are answered yes (the server still requires the confirmation they send)
    page.on('dialog', (d) => void d.accept());
    mkdirSync(ARTIFACTS, { recursive: true });
    // log in once with the printed address: the token goes into a cookie and out of the address bar
    await page.goto(`${ui.url}/fleet?token=${ui.tokens.operator}`);
    expect(page.url()).to.equal(`${ui.url}/fleet`);
  });
  after(async () => {
    await browser?.close();
    await ui?.close();
    if (shots.length) console.log(`      screenshots: ${shots.join(', ')}`);
  });

  /** Screenshots of the page as it is, at desktop and phone width. */
  async function shoot(name: string): Promise<void> {
    for (const [size, viewport] of Object.entries(SIZES)) {
      await page.setViewportSize(viewport);
      const file = join(ARTIFACTS, `${name}-${size}.png`);
      await page.screenshot({ path: file, fullPage: true });
      shots.push(file.replace(`${ROOT}/`, ''));
    }
    await page.setViewportSize(SIZES.desktop);
  }

  it('console - no token: 401; a viewer token cannot act; an action without its confirmation is refused; an unknown job is a plain not-found', async () => {
    expect((await fetch(`${ui.url}/fleet`)).status).to.equal(401);
    expect((await fetch(`${ui.url}/api/fleet`)).status).to.equal(401);
    expect((await fetch(`${ui.url}/api/fleet`, { headers: { authorization: 'Bearer wrong' } })).status).to.equal(401);
    const as = (token: string, body?: unknown): RequestInit => ({
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body ?? {}),
    });
    const viewer = await fetch(`${ui.url}/api/agents/ui-b/cordon`, as(ui.tokens.viewer, { confirm: 'ui-b' }));
    expect(viewer.status).to.equal(403);
    const unconfirmed = await fetch(`${ui.url}/api/agents/ui-b/cordon`, as(ui.tokens.operator));
    expect(unconfirmed.status).to.equal(400);
    expect(((await unconfirmed.json()) as { error: string }).error).to.match(
      /not confirmed: send \{"confirm": "ui-b"\}/,
    );
    const wrong = await fetch(`${ui.url}/api/agents/ui-b/drain`, as(ui.tokens.operator, { confirm: 'ui-a' }));
    expect(wrong.status).to.equal(400);
    expect((await fleetStates(fleet.client)).get('ui-b'), 'nothing was done').to.equal('ready');
    const api404 = await fetch(`${ui.url}/api/jobs/no-such-job`, {
      headers: { authorization: `Bearer ${ui.tokens.viewer}` },
    });
    expect(api404.status).to.equal(404);
    expect(await api404.json()).to.deep.equal({ error: "no job 'no-such-job'" });
    const r = await page.goto(`${ui.url}/jobs/no-such-job`);
    expect(r?.status()).to.equal(404);
    await page.waitForSelector('#notfound');
    expect(await page.textContent('#notfound h1')).to.equal('Job not found');
    expect(await page.content()).to.not.match(/at \w+ \(|node_modules|\.ts:\d+/);
    await shoot('not-found');
  });

  let running = '';
  it("console - the fleet page shows both agents with their devices; a running job's loss curve gains points without a reload", async () => {
    await page.goto(`${ui.url}/fleet`);
    await page.waitForSelector('[data-agent="ui-a"] [data-device="cpu"]');
    await page.waitForSelector('[data-agent="ui-b"] [data-device="cpu"]');
    expect(await page.textContent('[data-agent="ui-a"]')).to.match(/ready/);
    running = await fleet.client.submit(await loadSpecFile(tinyJob('console', 100_000, 50)), 'console-run');
    await until('training', async () => ((await fleet.client.describe(running)).lastStep?.step ?? 0) > 3, 180_000);
    // the fleet page shows the job on the device it runs on, live
    await page.waitForSelector(`[data-device="cpu"] a[href="/jobs/${running}"]`, { timeout: 30_000 });
    await shoot('fleet');
    await page.goto(`${ui.url}/jobs/${running}`);
    await page.waitForSelector('svg#loss[data-points]');
    const points = async (): Promise<number> => Number(await page.getAttribute('svg#loss', 'data-points'));
    const first = await points();
    // a mark on this document: a reload would lose it
    await page.evaluate('window.__sameDocument = true');
    await until('the curve gains points', async () => (await points()) >= first + 5, 60_000);
    expect(await page.evaluate('window.__sameDocument === true'), 'no reload').to.equal(true);
    expect(await page.textContent('#progress')).to.match(/^step \d+\/\d+, loss \d+\.\d{4}, ETA /);
    await shoot('job-running');
    await page.goto(`${ui.url}/jobs`);
    await page.waitForSelector(`tr[data-job="${running}"]`);
    expect(await page.textContent(`tr[data-job="${running}"]`)).to.match(/training/);
    await shoot('jobs');
  });

  it('console - cordon through the page (tunefleet fleet shows it cordoned), then cancel the running job through the page', async () => {
    const idle = (await fleet.client.describe(running)).status?.agentId === 'ui-a' ? 'ui-b' : 'ui-a';
    await page.goto(`${ui.url}/fleet`);
    await page.click(`[data-agent="${idle}"] button[data-action="cordon"]`);
    await until('cordoned', async () => (await fleetStates(fleet.client)).get(idle) === 'cordoned', 15_000);
    const table = await runCli(fleet.stack, 'fleet');
    expect(table.stdout).to.match(new RegExp(`${idle}\\s+cordoned`));
    await page.waitForSelector(`[data-agent="${idle}"] [data-state="cordoned"]`);
    await page.click(`[data-agent="${idle}"] button[data-action="uncordon"]`);
    await until('ready again', async () => (await fleetStates(fleet.client)).get(idle) === 'ready', 15_000);
    await page.goto(`${ui.url}/jobs/${running}`);
    await page.click('button[data-action="cancel"]');
    await until('cancelled', async () => (await fleet.client.describe(running)).temporal === 'CANCELLED', 60_000);
    await page.waitForSelector('#summary [data-state="cancelled"]', { timeout: 30_000 });
  });

  it('console - a finished job shows its evaluation base vs fine-tuned with its gates, examples and adapter', async () => {
    const path = tinyJob('console-done', 6, 1000);
    writeFileSync(
      path,
      readFileSync(path, 'utf8').replace(
        'evaluation: {exact_match: false}',
        'evaluation: {exact_match: false, gates: ["eval_loss <= base + 100"]}',
      ),
    );
    const id = await fleet.client.submit(await loadSpecFile(path), 'console-done');
    await fleet.client.events.follow(id, () => {});
    await page.goto(`${ui.url}/jobs/${id}`);
    await page.waitForSelector('#evaluation tbody tr');
    const rows = await page.$$eval('#evaluation tbody tr', (trs) => trs.map((t) => t.textContent ?? ''));
    expect(rows.some((r) => r.startsWith('eval_loss'))).to.equal(true);
    expect(await page.textContent('#gates')).to.match(/^pass: eval_loss/);
    expect(await page.$$eval('#result a[href*="/adapter/"]', (a) => a.length)).to.be.above(0);
    await shoot('job-finished');
  });
});
