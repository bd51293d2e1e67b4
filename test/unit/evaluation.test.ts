// Pure pieces of the evaluation step: gates, the human-review file round trip, the
// terminal chart and the SVG plot, and the tool scorer's sandbox (real processes).
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { stringify } from 'csv-stringify/sync';
import { parse } from 'csv-parse/sync';
import { TunefleetError, TunefleetErrors, checkGates, metricValues, parseGate, parseSpec } from '../../shared';
import { readReview, sampleRows, summarise, writeReview, type OutputRow } from '../../scheduler/cli/review';
import { lossChart } from '../../scheduler/cli/format';
import { lossSvg } from '../../scheduler/cli/plot';
import { runTool } from '../../agent/tool';
import { thrown } from '../harness/expect';

const metrics = (o: Partial<Record<string, number | null>>): ReturnType<typeof metricValues> =>
  metricValues({
    eval_loss: 2,
    perplexity: 7.39,
    exact_match: 0.1,
    bleu: 10,
    rouge_l: 0.2,
    judge: 0.5,
    ...o,
  } as Parameters<typeof metricValues>[0]);

describe('evaluation - gates', () => {
  it('evaluation - gates parse absolute and relative thresholds, and refuse what they cannot read', () => {
    expect(parseGate('exact_match >= base + 0.05')).to.include({
      metric: 'exact_match',
      op: '>=',
      relative: true,
      offset: 0.05,
    });
    expect(parseGate('eval_loss<=base-0.1')).to.include({
      metric: 'eval_loss',
      op: '<=',
      relative: true,
      offset: -0.1,
    });
    expect(parseGate('judge >= 0.8')).to.include({ metric: 'judge', relative: false, offset: 0.8 });
    expect(parseGate('tool.valid_json > 0.9')).to.include({ metric: 'tool.valid_json', op: '>' });
    expect(() => parseGate('accuracy >= 0.5')).to.throw(/unknown metric 'accuracy'/);
    expect(() => parseGate('judge => 0.5')).to.throw(/is not a gate/);
    expect(() =>
      parseSpec(
        'name: j\nmodel: m\nmethod: lora\ndataset: {path: d.jsonl}\nevaluation: {gates: ["judge >= high"]}\n',
        'job.yaml',
      ),
    )
      .to.throw(TunefleetErrors)
      .that.satisfies(
        (e: TunefleetErrors) =>
          /evaluation\.gates\.0/.test(e.problems.map((p) => p.describe()).join()) || /gates/.test(e.message),
      );
  });

  it('evaluation - a gate passes or fails with the numbers; a missing value fails the gate', () => {
    const base = metrics({ exact_match: 0.1 });
    const [pass, fail, missing] = checkGates(
      ['exact_match >= base + 0.05', 'judge >= 0.8', 'tool.valid > 0.5'],
      metrics({ exact_match: 0.3, judge: 0.6 }),
      base,
    );
    expect(pass).to.include({ passed: true, value: 0.3, base: 0.1 });
    expect(pass?.threshold).to.be.closeTo(0.15, 1e-12);
    expect(pass?.message).to.equal('exact_match 0.3000 >= base 0.1000 + 0.0500 = 0.1500: pass');
    expect(fail).to.include({ passed: false, value: 0.6, threshold: 0.8 });
    expect(fail?.message).to.equal('judge 0.6000 >= 0.8000: FAIL');
    expect(missing).to.include({ passed: false, value: null });
    expect(missing?.message).to.match(/no tool\.valid value/);
    const [lower] = checkGates(['eval_loss <= base - 0.5'], metrics({ eval_loss: 1.2 }), metrics({ eval_loss: 2 }));
    expect(lower?.passed).to.equal(true);
  });
});

describe('evaluation - human review files', () => {
  const stored: OutputRow[] = Array.from({ length: 30 }, (_, i) => ({
    prompt: `prompt ${i}, with "quotes",\nand a newline`,
    reference: `ref ${i}`,
    base: `b${i}`,
    tuned: `t${i}`,
  }));

  it('evaluation - a seeded sample is the same every time and in id order', () => {
    const a = sampleRows(stored, 10, 7).map((x) => x.id);
    expect(a).to.deep.equal(sampleRows(stored, 10, 7).map((x) => x.id));
    expect(a).to.not.deep.equal(sampleRows(stored, 10, 8).map((x) => x.id));
    expect([...a].sort((x, y) => x - y)).to.deep.equal(a);
    expect(sampleRows(stored, 100, 0)).to.have.length(30);
  });

  it('evaluation - exported CSV, graded and read back, gives the summary; rows left empty are skipped', () => {
    const csv = writeReview(sampleRows(stored, 6, 1), 'csv');
    const rows = parse(csv, { columns: true }) as Record<string, string>[];
    expect(rows[0]?.prompt).to.match(/\nand a newline/);
    rows.forEach((r, i) => {
      if (i < 4) Object.assign(r, { base_grade: '2', tuned_grade: String(i < 3 ? 4 : 1) });
    });
    const graded = readReview(stringify(rows, { header: true }), 'csv', 'r.csv', stored);
    expect(graded).to.have.length(4);
    const s = summarise(graded, 'r.csv', new Date(0));
    expect(s).to.include({ graded: 4, base_mean: 2, tuned_mean: 3.25, tuned_better: 0.75, tuned_worse: 0.25 });
  });

  it('evaluation - a bad review row is refused with its line and nothing is imported', () => {
    const jsonl = writeReview(sampleRows(stored, 3, 1), 'jsonl')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const fill = (o: Record<string, unknown>[]): string => o.map((r) => JSON.stringify(r)).join('\n');
    const ok = jsonl.map((r) => ({ ...r, base_grade: 3, tuned_grade: 4 }));
    expect(readReview(fill(ok), 'jsonl', 'r.jsonl', stored)).to.have.length(3);
    const cases: [Record<string, unknown>[], RegExp][] = [
      [[{ ...ok[0], tuned_grade: 7 }], /r\.jsonl:1: tuned_grade 7 is not a whole number from 1 to 5/],
      [[{ ...ok[0], id: 99 }], /id 99 is not one of this job's 30/],
      [[ok[0] as Record<string, unknown>, ok[0] as Record<string, unknown>], /appears twice/],
      [[{ ...ok[0], prompt: 'edited' }], /prompt differs/],
      [[{ ...ok[0], base_grade: '' }], /grade both answers or neither/],
      [[{ ...ok[0], base_grade: '', tuned_grade: '' }], /no graded row/],
    ];
    for (const [rows, why] of cases) {
      const e = thrown(() => readReview(fill(rows), 'jsonl', 'r.jsonl', stored), `rows ${JSON.stringify(rows)}`);
      expect(e).to.be.instanceOf(TunefleetError);
      const text =
        e instanceof TunefleetErrors
          ? `${e.message}\n${e.problems.map((p) => p.describe()).join('\n')}`
          : (e as TunefleetError).describe();
      expect(text).to.match(why);
    }
    expect(() => readReview('id,prompt\n1,x\n', 'csv', 'r.csv', stored)).to.throw(/no 'base_grade' column/);
  });
});

describe('evaluation - loss chart and plot', () => {
  const curve = {
    train: Array.from({ length: 100 }, (_, i): [number, number] => [i + 1, 3 * Math.exp(-i / 30) + 0.5]),
    eval: [
      [50, 1.2],
      [100, 0.9],
    ] as [number, number][],
  };
  it('evaluation - the terminal chart spans the steps and the loss range, eval points marked', () => {
    const c = lossChart(curve, 40, 8);
    const lines = c.split('\n');
    expect(lines[0]).to.match(/^ +3\.\d{3} │/);
    expect(c)
      .to.include('o')
      .and.include('·')
      .and.match(/step 1 +100/);
    expect(lines.slice(0, 8).every((l) => l.length <= 9 + 1 + 40)).to.equal(true);
    expect(lossChart({ train: [], eval: [] })).to.match(/no loss curve/);
  });
  it('evaluation - the SVG has a polyline for train loss and a point per eval', () => {
    const svg = lossSvg(curve, 'job <x> & y');
    expect(svg)
      .to.match(/^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/)
      .and.include('<polyline')
      .and.include('job &lt;x&gt; &amp; y');
    expect(svg.match(/<circle/g)).to.have.length(3); // two evals and the legend
  });
});

describe('evaluation - the tool scorer sandbox (real processes)', function () {
  this.timeout(30_000);
  const rows = [
    { prompt: 'p', reference: '{"a": 1}', output: '{"a": 1}' },
    { prompt: 'p', reference: '{}', output: 'not json' },
  ];
  const py = (src: string): string[] => ['python3', '-c', src];

  it('evaluation - scores come from the last line; the tool runs in an empty temporary directory', async () => {
    const r = await runTool(
      py(
        'import sys, json, os\nrows = [json.loads(l) for l in sys.stdin]\nok = 0\nfor r in rows:\n    try: json.loads(r["output"]); ok += 1\n    except ValueError: pass\nprint("checking")\nprint(json.dumps({"valid_json": ok / len(rows), "files_here": len(os.listdir("."))}))',
      ),
      10,
      rows,
    );
    expect(r.error).to.equal(null);
    expect(r.scores).to.deep.equal({ valid_json: 0.5, files_here: 0 });
  });

  it('evaluation - a timeout, a crash and unreadable output are reported, not thrown', async () => {
    expect((await runTool(py('import time; time.sleep(30)'), 1, rows)).error).to.match(/timed out after 1 s/);
    expect((await runTool(py('import sys; sys.stderr.write("boom"); sys.exit(3)'), 5, rows)).error).to.match(
      /exited with 3: boom/,
    );
    expect((await runTool(py('print("0.5")'), 5, rows)).error).to.match(/must be a JSON object/);
    expect((await runTool(py('print(\'{"s": "high"}\')'), 5, rows)).error).to.match(/score s is not a finite number/);
    expect((await runTool(['/no/such/tool'], 5, rows)).error).to.match(/exited with|could not start/);
  });

  it("evaluation - the tool has no network, not even this machine's loopback", async () => {
    const server = createServer((s) => s.on('error', () => {}).end('hello')).listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const port = (server.address() as { port: number }).port;
    const probe = py(
      `import socket, json\ntry:\n    socket.create_connection(("127.0.0.1", ${port}), timeout=2); ok = 1\nexcept OSError:\n    ok = 0\nprint(json.dumps({"connected": ok}))`,
    );
    try {
      const r = await runTool(probe, 10, rows);
      expect(r.error).to.equal(null);
      expect(r.scores.connected, 'a connection from inside the sandbox').to.equal(0);
      // the same probe outside the sandbox does connect, so the check above can fail
      const outside = await new Promise<string>((res, rej) =>
        execFile(probe[0] as string, probe.slice(1), (e, out) => (e ? rej(e) : res(out))),
      );
      expect(JSON.parse(outside.trim()), 'the probe run directly').to.deep.equal({ connected: 1 });
    } finally {
      server.close();
    }
  });

  it("evaluation - the tool cannot read the agent's secrets, cannot write the trainer's directory and cannot remove what hides them", async () => {
    const home = mkdtempSync(join(tmpdir(), 'tunefleet-home-'));
    mkdirSync(join(home, 'secrets'), { mode: 0o700 });
    writeFileSync(join(home, 'secrets', 'agent-a.creds'), 'SUAM-seed', { mode: 0o600 });
    const work = mkdtempSync(join(tmpdir(), 'tunefleet-work-'));
    writeFileSync(join(work, 'run.json'), '{}');
    const probe = [
      'sh',
      '-c',
      `cat '${home}/secrets/agent-a.creds' >/dev/null 2>&1; r=$?; touch '${work}/sitecustomize.py' 2>/dev/null; w=$?; ` +
        `umount '${home}' 2>/dev/null; u=$?; echo "{\\"read\\": $r, \\"write\\": $w, \\"umount\\": $u}"`,
    ];
    try {
      const r = await runTool(probe, 10, rows, [home, work]);
      expect(r.error).to.equal(null);
      expect(r.scores.read, 'reading a secret').to.not.equal(0);
      expect(r.scores.write, "writing the trainer's directory").to.not.equal(0);
      expect(r.scores.umount, 'unmounting what hides the home').to.not.equal(0);
      expect(existsSync(join(work, 'sitecustomize.py'))).to.equal(false);
      // the same probe unhidden does read and write, so the checks above can fail
      const open = await runTool(probe, 10, rows, []);
      expect(open.scores.read).to.equal(0);
      expect(open.scores.write).to.equal(0);
    } finally {
      rmSync(home, { recursive: true, force: true });
      rmSync(work, { recursive: true, force: true });
    }
  });

  it('evaluation - at the timeout every process the tool started is gone, setsid or not', async () => {
    const marker = `tunefleet-setsid-${process.pid}`;
    const t0 = Date.now();
    const r = await runTool(['sh', '-c', `setsid sh -c 'exec -a ${marker} sleep 1000' & sleep 1000`], 1, rows);
    expect(r.error).to.match(/timed out after 1 s/);
    expect(Date.now() - t0, 'the tool returns at its timeout').to.be.below(10_000);
    const ps = await new Promise<string>((res) => execFile('ps', ['-eo', 'args='], (_e, out) => res(out)));
    expect(ps.split('\n').filter((l) => l.includes(marker))).to.deep.equal([]);
  });
});
