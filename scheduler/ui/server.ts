// The operator's console: a web dashboard (fastify) over what the CLI reads — adverts and
// operator intent (the fleet view), job workflows (Temporal), job events, placement
// decisions and results (NATS) — with no store of its own. Pages are a static shell and a
// script (scheduler/ui/static) that read the JSON API below and follow it live with
// server-sent events.
//
// Every request needs a token from the secrets directory (ui.ts): the viewer token reads,
// the operator token also acts (cordon, uncordon, drain, cancel). A browser gets it once in
// the URL that `tunefleet ui` prints and keeps it in an HttpOnly, SameSite=Strict cookie.
// An action carries its target again as its confirmation ({"confirm": "<agent or job id>"},
// what the page's dialog sends); without it the action is refused.
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { timingSafeEqual } from 'node:crypto';
import {
  ADVERT_TTL_MS,
  ErrorCode,
  ID_PATTERN,
  JOB_STATES,
  METHODS,
  TunefleetError,
  advertDevices,
  deviceLabel,
  metricValues,
  type Advert,
  type JobState,
} from '../../shared';
import type { JobClient } from '../cli/client';
import { setAgentState } from '../cli/fleetcmd';
import type { FleetView } from '../fleet';

export const STATIC_DIR = resolve(__dirname, '..', '..', '..', 'scheduler', 'ui', 'static');
const COOKIE = 'tunefleet_ui';
/** How often a live page gets a fresh snapshot (fleet, job list, a job's status). */
const PUSH_MS = 1000;

export type Role = 'viewer' | 'operator';

export interface UiDeps {
  /** reads (Temporal, events, decisions, results) and cancels: the cli identity */
  jobs: JobClient;
  /** cordon, uncordon, drain: the operator identity */
  operator: JobClient;
  fleet: FleetView;
  tokens: Record<Role, string>;
  /** Temporal's own web UI for a workflow link (null: none known) */
  temporalUi: string | null;
  log: (m: string) => void;
}

const same = (a: string, b: string): boolean =>
  a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));

function cookieToken(req: FastifyRequest): string | null {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === COOKIE) return decodeURIComponent(v.join('='));
  }
  return null;
}

/** The role a request's token gives (bearer header, cookie, or the one-time ?token= of the printed URL). */
function roleOf(req: FastifyRequest, tokens: Record<Role, string>): { role: Role; token: string } | null {
  const bearer = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
  const query = (req.query as Record<string, unknown> | undefined)?.token;
  for (const token of [bearer, typeof query === 'string' ? query : undefined, cookieToken(req) ?? undefined]) {
    if (!token) continue;
    if (same(token, tokens.operator)) return { role: 'operator', token };
    if (same(token, tokens.viewer)) return { role: 'viewer', token };
  }
  return null;
}

/** One agent as the fleet page shows it: its devices, each with what holds it. */
export function agentRow(e: { advert: Advert; lastSeen: number }, now: number) {
  const a = e.advert;
  const devices = advertDevices(a).map((d) => {
    const gpu = a.gpus.find((g) => g.uuid === d.uuid || g.uuid === d.parent);
    const jobs = a.sessions
      .filter((s) => s.devices.includes(d.uuid) || (s.devices.length === 0 && d.kind === 'cpu'))
      .map((s) => ({ job: s.job_id, attempt: s.attempt, rank: s.rank ?? null }));
    const cpu = d.kind === 'cpu';
    return {
      uuid: d.uuid,
      label: cpu ? 'CPU' : deviceLabel(d),
      kind: d.kind,
      total: cpu ? a.memory.total : (gpu?.memory_total ?? d.memory_total),
      used: cpu ? a.memory.total - a.memory.available : (gpu?.memory_used ?? null),
      utilization: gpu?.utilization_pct ?? null,
      temperature: gpu?.temperature_c ?? null,
      jobs,
    };
  });
  return {
    id: a.agent_id,
    hostname: a.hostname,
    state: now - e.lastSeen > ADVERT_TTL_MS ? 'gone' : a.state,
    accelerator: a.accelerator,
    labels: a.labels,
    sessions: a.sessions.length,
    maxSessions: a.max_sessions ?? null,
    lastSeen: e.lastSeen,
    devices,
  };
}

/**
 * A job's page data: status, decisions, the result when it has one. Its events come by their own stream (replayed
 * from the first: a running job's events never end, so they are not read to an end here).
 */
async function jobView(jobs: JobClient, id: string) {
  const d = await jobs.describe(id);
  const decisions = await jobs.decisions(id).catch(() => []);
  const result = d.temporal === 'COMPLETED' ? await jobs.result(id).catch(() => null) : null;
  const metrics = result
    ? Object.entries(metricValues(result.evaluation.base) as Record<string, number | null | undefined>).map(
        ([name, b]) => {
          const base = b ?? null;
          const tuned = (metricValues(result.evaluation.tuned) as Record<string, number | null>)[name] ?? null;
          return { name, base, tuned, delta: base !== null && tuned !== null ? tuned - base : null };
        },
      )
    : [];
  return { ...d, decisions, result, metrics };
}

async function sendStatic(reply: FastifyReply, file: string, type: string): Promise<void> {
  const body = await readFile(resolve(STATIC_DIR, file));
  await reply.header('content-type', type).header('cache-control', 'no-store').send(body);
}

/** The live streams of one console: stopped, and their last reads waited for, before its clients close. */
type Streams = Set<{ stop(): void; done: Promise<unknown> }>;

/** A server-sent event stream that pushes what `next` returns every PUSH_MS until the browser leaves. */
function pushEvery(streams: Streams, req: FastifyRequest, reply: FastifyReply, next: () => Promise<unknown>): void {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': 'text/event-stream',
    'cache-control': 'no-store',
    connection: 'keep-alive',
  });
  let open = true;
  let wake: (() => void) | null = null;
  const stream = {
    stop: () => {
      open = false;
      wake?.();
    },
    done: Promise.resolve() as Promise<unknown>,
  };
  req.raw.on('close', stream.stop);
  stream.done = (async () => {
    while (open) {
      const data = await next().catch((e: unknown) => ({ error: e instanceof Error ? e.message : String(e) }));
      if (!open) break;
      res.write(`data: ${JSON.stringify(data)}\n\n`);
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, PUSH_MS);
      });
    }
    res.end();
  })();
  streams.add(stream);
  void stream.done.finally(() => streams.delete(stream));
}

/**
 * One read for many askers: a read of `key` in flight, or finished less than `ms` ago, is handed to the next asker
 * rather than made again (an older one is read afresh; a failed read is not kept).
 */
export function sharedReads(ms: number): <T>(key: string, read: () => Promise<T>) => Promise<T> {
  const reads = new Map<string, { done: number | null; value: Promise<unknown> }>();
  return <T>(key: string, read: () => Promise<T>): Promise<T> => {
    const now = Date.now();
    const hit = reads.get(key);
    if (hit && (hit.done === null || now - hit.done < ms)) return hit.value as Promise<T>;
    for (const [k, r] of reads) if (r.done !== null && now - r.done >= ms) reads.delete(k);
    const entry: { done: number | null; value: Promise<unknown> } = { done: null, value: read() };
    reads.set(key, entry);
    entry.value.then(
      () => (entry.done = Date.now()),
      () => reads.get(key) === entry && reads.delete(key),
    );
    return entry.value as Promise<T>;
  };
}

function checkId(id: string, what: string): string {
  if (!ID_PATTERN.test(id)) throw new TunefleetError(ErrorCode.FlagInvalid, `'${id.slice(0, 80)}' is not ${what}`);
  return id;
}

/** The page shell; `boot` (what /api/whoami answers) rides along so the script draws without asking first. */
const page = (title: string, boot: unknown): string =>
  `<!doctype html><html lang="en"><head><meta charset="utf-8">` +
  `<meta name="viewport" content="width=device-width, initial-scale=1">` +
  `<title>${title} · tunefleet</title><link rel="stylesheet" href="/static/app.css"></head>` +
  `<body><header><a class="brand" href="/fleet">tunefleet</a><nav><a href="/fleet">Fleet</a>` +
  `<a href="/jobs">Jobs</a></nav><span id="role"></span></header><main id="main"><p>loading…</p></main>` +
  // JSON in a script element: '<' escaped, so no text in it can close the element
  `<script id="boot" type="application/json">${JSON.stringify(boot).replace(/</g, '\\u003c')}</script>` +
  `<script src="/static/app.js"></script></body></html>`;

export function buildUi(deps: UiDeps): FastifyInstance {
  // live streams are ended on close rather than waited for
  const app = Fastify({ logger: false, bodyLimit: 64 * 1024, forceCloseConnections: true });
  const { jobs, fleet } = deps;
  const streams: Streams = new Set();
  app.addHook('onClose', async () => {
    const all = [...streams];
    for (const s of all) s.stop();
    await Promise.allSettled(all.map((s) => s.done));
  });

  // every request carries a token; ?token= sets the cookie and drops the token from the address bar
  app.addHook('onRequest', async (req, reply) => {
    const who = roleOf(req, deps.tokens);
    if (!who) {
      const api = req.url.startsWith('/api/');
      await reply
        .code(401)
        .header('content-type', api ? 'application/json' : 'text/html; charset=utf-8')
        .send(
          api
            ? { error: 'a token is needed: the URL `tunefleet ui` printed, or Authorization: Bearer <token>' }
            : '<!doctype html><title>tunefleet · login</title><h1>401: log in</h1>' +
                '<p>Open the address <code>tunefleet ui</code> printed (it carries a token), or the console ' +
                'with <code>?token=</code> and a token from the secrets directory.</p>',
        );
      return reply;
    }
    (req as FastifyRequest & { role: Role }).role = who.role;
    const query = (req.query as Record<string, unknown> | undefined)?.token;
    if (typeof query === 'string' && req.method === 'GET' && !req.url.startsWith('/api/')) {
      const path = req.url.split('?')[0] ?? '/';
      await reply
        .header('set-cookie', `${COOKIE}=${encodeURIComponent(who.token)}; HttpOnly; SameSite=Strict; Path=/`)
        .redirect(path);
      return reply;
    }
  });
  const roleIn = (req: FastifyRequest): Role => (req as FastifyRequest & { role: Role }).role;
  const mustOperate = (req: FastifyRequest): void => {
    if (roleIn(req) !== 'operator')
      throw new TunefleetError(ErrorCode.FlagInvalid, 'this token reads only: actions need the operator token');
  };
  const confirmed = (req: FastifyRequest, target: string): void => {
    const body = (req.body ?? {}) as { confirm?: unknown };
    if (body.confirm !== target)
      throw new TunefleetError(
        ErrorCode.FlagInvalid,
        `not confirmed: send {"confirm": "${target}"} (the page asks before it acts)`,
      );
  };

  app.setErrorHandler(async (err, req, reply) => {
    const e = err as unknown;
    let code = 500;
    let message = 'internal error (see the console log)';
    if (e instanceof TunefleetError) {
      code =
        e.code === ErrorCode.JobNotFound
          ? 404
          : e.code === ErrorCode.FlagInvalid && /operator token/.test(e.message)
            ? 403
            : e.code === ErrorCode.FlagInvalid
              ? 400
              : 409;
      message = e.message;
    } else if ((err as { statusCode?: number }).statusCode && (err as { statusCode: number }).statusCode < 500) {
      code = (err as { statusCode: number }).statusCode;
      message = (err as Error).message;
    } else deps.log(`ui: ${req.method} ${req.url}: ${(err as Error).stack ?? String(err)}`);
    await reply.code(code).send({ error: message });
  });
  const whoami = (req: FastifyRequest) => ({
    role: roleIn(req),
    temporalUi: deps.temporalUi,
    states: JOB_STATES,
    methods: METHODS,
  });
  app.setNotFoundHandler(async (req, reply) => {
    if (req.url.startsWith('/api/'))
      return reply.code(404).send({ error: `no such endpoint: ${req.method} ${req.url}` });
    return reply
      .code(404)
      .header('content-type', 'text/html; charset=utf-8')
      .send(page('not found', whoami(req)));
  });

  app.get('/', async (_req, reply) => reply.redirect('/fleet'));
  for (const path of ['/fleet', '/jobs'])
    app.get(path, async (req, reply) =>
      reply.header('content-type', 'text/html; charset=utf-8').send(page(path.slice(1), whoami(req))),
    );
  app.get('/jobs/:id', async (req, reply) => {
    const { id } = req.params as { id: string };
    // an unknown job's page is a plain not-found (the script says so), never an error page
    const known =
      ID_PATTERN.test(id) &&
      (await jobs.describe(id).then(
        () => true,
        () => false,
      ));
    return reply
      .code(known ? 200 : 404)
      .header('content-type', 'text/html; charset=utf-8')
      .send(page(known ? id : 'not found', whoami(req)));
  });
  app.get('/static/app.js', async (_req, reply) => sendStatic(reply, 'app.js', 'text/javascript; charset=utf-8'));
  app.get('/static/app.css', async (_req, reply) => sendStatic(reply, 'app.css', 'text/css; charset=utf-8'));

  app.get('/api/whoami', async (req) => whoami(req));
  const recent = sharedReads(PUSH_MS / 2);
  const fleetNow = async () => {
    const now = Date.now();
    return { agents: fleet.snapshot().map((e) => agentRow(e, now)) };
  };
  app.get('/api/fleet', fleetNow);
  app.get('/api/fleet/stream', async (req, reply) => pushEvery(streams, req, reply, fleetNow));

  const listNow = async (q: Record<string, string | undefined>) => {
    const state = q.state && (JOB_STATES as readonly string[]).includes(q.state) ? (q.state as JobState) : undefined;
    const method = q.method && (METHODS as readonly string[]).includes(q.method) ? q.method : undefined;
    const model = q.model && /^[A-Za-z0-9._-]{1,200}$/.test(q.model) ? q.model : undefined;
    const limit = Math.min(200, Math.max(1, Number(q.limit ?? 50) || 50));
    // a page's first request and its stream's first push, and every viewer of the same list, share one read
    // brief=1: visibility alone (the page's first draw; its stream fills in progress, eval loss and errors)
    const brief = q.brief === '1';
    return recent(`list ${state} ${model} ${method} ${limit} ${brief}`, async () => ({
      jobs: await jobs.list({
        ...(state ? { state } : {}),
        ...(model ? { model } : {}),
        ...(method ? { query: `TunefleetMethod = '${method}'` } : {}),
        limit,
        brief,
      }),
    }));
  };
  app.get('/api/jobs', async (req) => listNow(req.query as Record<string, string>));
  app.get('/api/jobs/stream', async (req, reply) =>
    pushEvery(streams, req, reply, () => listNow(req.query as Record<string, string>)),
  );
  app.get('/api/jobs/:id', async (req) => jobView(jobs, checkId((req.params as { id: string }).id, 'a job id')));
  app.get('/api/jobs/:id/status', async (req, reply) => {
    const id = checkId((req.params as { id: string }).id, 'a job id');
    await jobs.describe(id);
    pushEvery(streams, req, reply, () => jobs.describe(id));
  });
  // the job's events from the first, then live, until the browser leaves
  app.get('/api/jobs/:id/events', async (req, reply) => {
    const id = checkId((req.params as { id: string }).id, 'a job id');
    await jobs.describe(id);
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
    const stop = new AbortController();
    const stream = { stop: () => stop.abort(), done: Promise.resolve() as Promise<unknown> };
    req.raw.on('close', stream.stop);
    stream.done = jobs.events
      .stream(id, (e) => void res.write(`data: ${JSON.stringify(e)}\n\n`), stop.signal)
      .catch((e: unknown) => deps.log(`ui: events of ${id}: ${String(e)}`))
      .finally(() => {
        res.end();
        streams.delete(stream);
      });
    streams.add(stream);
  });
  app.get('/api/jobs/:id/adapter/:file', async (req, reply) => {
    const { id, file } = req.params as { id: string; file: string };
    checkId(id, 'a job id');
    const result = await jobs.result(id);
    const f = result.adapter.files.find((x) => x.name === file);
    if (!f) return reply.code(404).send({ error: `the adapter of ${id} has no file '${file.slice(0, 80)}'` });
    const blob = await (
      await (await jobs.nats()).objects(result.adapter.bucket)
    ).getBlob(`${result.adapter.prefix}${f.name}`);
    if (!blob) return reply.code(404).send({ error: `${f.name} is missing from the store` });
    return reply
      .header('content-type', 'application/octet-stream')
      .header('content-disposition', `attachment; filename="${f.name.replace(/[^A-Za-z0-9._-]/g, '_')}"`)
      .send(Buffer.from(blob));
  });

  // actions: the operator token, and the target named again as the confirmation
  for (const state of ['cordon', 'uncordon', 'drain'] as const)
    app.post(`/api/agents/:id/${state}`, async (req) => {
      mustOperate(req);
      const id = checkId((req.params as { id: string }).id, 'an agent id');
      confirmed(req, id);
      const desired = state === 'uncordon' ? 'ready' : state === 'cordon' ? 'cordoned' : 'draining';
      const r = await setAgentState(await deps.operator.nats(), id, desired, 'console');
      deps.log(`ui: ${state} ${id} (${r.confirmed ?? 'recorded'})`);
      return { agent: id, state: desired, confirmed: r.confirmed };
    });
  app.post('/api/jobs/:id/cancel', async (req) => {
    mustOperate(req);
    const id = checkId((req.params as { id: string }).id, 'a job id');
    confirmed(req, id);
    await jobs.cancel(id);
    deps.log(`ui: cancel ${id}`);
    return { job: id, cancelled: true };
  });
  return app;
}
