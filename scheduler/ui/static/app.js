// tunefleet console: renders /fleet, /jobs and /jobs/:id from the JSON API and follows them
// with server-sent events. Every string from the fleet (adverts, events, decisions) is put
// in the page as text, never as markup.
'use strict';

const main = document.getElementById('main');
let role = 'viewer';

/** An element: el('td', {class: 'x'}, 'text', child, ...) — strings become text nodes. */
function el(tag, attrs, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    n.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return n;
}
const svgEl = (tag, attrs) => {
  const n = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
  return n;
};
const gib = (b) => (b === null || b === undefined ? '-' : `${(b / 2 ** 30).toFixed(1)} GiB`);
const ago = (ms) => {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 90 ? `${s} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`;
};
const dur = (s) => (s === null || s === undefined ? '-' : ago(s * 1000));
const badge = (state) => el('span', { class: `badge s-${state}`, 'data-state': state }, state);
/** A workflow's Temporal status as a job state, for a job whose status query has no answer (it has ended). */
const CLOSED = {
  CANCELLED: 'cancelled',
  FAILED: 'failed',
  TERMINATED: 'failed',
  TIMED_OUT: 'failed',
  COMPLETED: 'succeeded',
};
const stateOf = (temporal) => CLOSED[temporal] || temporal.toLowerCase();
const num = (v, d = 4) => (v === null || v === undefined ? '-' : Number(v).toFixed(d));

async function api(path, init) {
  const res = await fetch(path, { credentials: 'same-origin', ...init });
  const body = await res.json().catch(() => ({ error: `HTTP ${res.status}` }));
  if (!res.ok) throw Object.assign(new Error(body.error || `HTTP ${res.status}`), { status: res.status });
  return body;
}

/** Ask, then act: the target is sent again as the confirmation the server requires. */
async function act(what, target, path) {
  if (!window.confirm(`${what} ${target}?`)) return;
  try {
    await api(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ confirm: target }),
    });
  } catch (e) {
    window.alert(`${what} ${target}: ${e.message}`);
  }
}

/** A server-sent event stream that calls `on` with each parsed message; closed when the page changes. */
function follow(path, on) {
  const s = new EventSource(path);
  s.onmessage = (m) => on(JSON.parse(m.data));
  window.addEventListener('pagehide', () => s.close());
  return s;
}

/** `draw`, called only when what it is given differs from what it drew last (a snapshot pushed again is skipped). */
function changed(draw) {
  let last = null;
  return (data) => {
    const text = JSON.stringify(data);
    if (text === last) return;
    last = text;
    draw(data);
  };
}

// ---------------------------------------------------------------- fleet
function deviceCell(d) {
  const share = d.used !== null && d.total ? Math.min(100, (100 * d.used) / d.total) : 0;
  return el(
    'div',
    { class: 'device', 'data-device': d.uuid },
    el('div', { class: 'label' }, d.label),
    el('div', { class: 'bar' }, el('span', { style: `width:${share.toFixed(0)}%` })),
    el('div', {}, `${gib(d.used)} of ${gib(d.total)}`),
    el(
      'div',
      { class: 'muted' },
      d.utilization === null ? '' : `${d.utilization}% util`,
      d.temperature === null ? '' : ` · ${d.temperature} °C`,
    ),
    el(
      'div',
      {},
      d.jobs.length === 0
        ? el('span', { class: 'muted' }, 'free')
        : d.jobs.map((j) =>
            el(
              'div',
              {},
              el('a', { href: `/jobs/${encodeURIComponent(j.job)}` }, j.job),
              j.rank === null ? '' : ` rank ${j.rank}`,
            ),
          ),
    ),
  );
}

function hostRow(a) {
  const operator = role === 'operator' && a.state !== 'gone';
  return el(
    'div',
    { class: 'card host', 'data-agent': a.id },
    el(
      'div',
      {},
      el('div', { class: 'name' }, a.id),
      el('div', {}, badge(a.state), ' ', el('span', { class: 'muted' }, a.accelerator)),
      el(
        'div',
        { class: 'muted' },
        `${a.sessions}${a.maxSessions ? `/${a.maxSessions}` : ''} sessions · seen ${ago(Date.now() - a.lastSeen)} ago`,
      ),
      el(
        'div',
        { class: 'muted' },
        Object.entries(a.labels)
          .map(([k, v]) => `${k}=${v}`)
          .join(' '),
      ),
      operator
        ? el(
            'div',
            { class: 'actions' },
            a.state === 'ready'
              ? el(
                  'button',
                  { 'data-action': 'cordon', onclick: () => act('Cordon', a.id, `/api/agents/${a.id}/cordon`) },
                  'Cordon',
                )
              : el(
                  'button',
                  { 'data-action': 'uncordon', onclick: () => act('Uncordon', a.id, `/api/agents/${a.id}/uncordon`) },
                  'Uncordon',
                ),
            a.state === 'draining' || a.state === 'drained'
              ? null
              : el(
                  'button',
                  {
                    class: 'danger',
                    'data-action': 'drain',
                    onclick: () => act('Drain', a.id, `/api/agents/${a.id}/drain`),
                  },
                  'Drain',
                ),
          )
        : null,
    ),
    el('div', { class: 'devices' }, a.devices.map(deviceCell)),
  );
}

function fleetPage() {
  document.title = 'fleet · tunefleet';
  const list = el('div', { id: 'hosts' });
  main.replaceChildren(el('h1', {}, 'Fleet'), list);
  const draw = changed((f) => {
    if (f.error) return list.replaceChildren(el('p', { class: 'fail' }, f.error));
    list.replaceChildren(
      ...(f.agents.length ? f.agents.map(hostRow) : [el('p', { class: 'muted' }, 'no agent is advertising')]),
    );
  });
  // the live stream opens once the first answer is drawn: it does not compete with the first draw
  api('/api/fleet')
    .then(draw, (e) => draw({ error: e.message }))
    .finally(() => follow('/api/fleet/stream', draw));
}

// ---------------------------------------------------------------- jobs
/** The job states and methods the filters offer (from the server: shared/jobs.ts, shared/spec.ts). */
let choices = { states: [], methods: [] };

function jobsPage() {
  document.title = 'jobs · tunefleet';
  const q = new URLSearchParams(location.search);
  const select = (name, values) =>
    el(
      'select',
      {
        name,
        onchange: (e) => {
          q.set(name, e.target.value);
          location.search = q.toString();
        },
      },
      values.map((v) => el('option', { value: v, selected: q.get(name) === v }, v || `any ${name}`)),
    );
  const model = el('input', { name: 'model', placeholder: 'model', value: q.get('model') || '' });
  model.addEventListener('change', () => {
    q.set('model', model.value);
    location.search = q.toString();
  });
  const body = el('tbody', {});
  main.replaceChildren(
    el('h1', {}, 'Queue and jobs'),
    el(
      'div',
      { class: 'filters' },
      select('state', ['', ...choices.states]),
      select('method', ['', ...choices.methods]),
      model,
    ),
    el(
      'div',
      { class: 'scroll' },
      el(
        'table',
        { id: 'jobs' },
        el(
          'thead',
          {},
          el(
            'tr',
            {},
            ['job', 'state', 'queue', 'agent', 'attempt/epoch', 'progress', 'submitted', 'took', ''].map((h) =>
              el('th', { class: h === 'submitted' ? 'hide-narrow' : null }, h),
            ),
          ),
        ),
        body,
      ),
    ),
  );
  const drawn = changed((r) => {
    if (r.error) return body.replaceChildren(el('tr', {}, el('td', { colspan: 9, class: 'fail' }, r.error)));
    body.replaceChildren(
      ...r.jobs.map((j) => {
        const p = j.progress;
        const running = j.status === 'RUNNING';
        return el(
          'tr',
          { 'data-job': j.jobId },
          el('td', {}, el('a', { href: `/jobs/${encodeURIComponent(j.jobId)}` }, j.jobId)),
          el('td', {}, j.state ? badge(j.state) : '-'),
          el('td', {}, j.position ? `#${j.position}` : '-'),
          el('td', {}, j.agent || '-'),
          el('td', {}, j.attempt ? `${j.attempt}/${j.epoch ?? j.attempt}` : '-'),
          el(
            'td',
            {},
            p && p.stepsTotal ? `${p.step}/${p.stepsTotal} (${Math.floor((100 * p.step) / p.stepsTotal)}%)` : '-',
          ),
          el('td', { class: 'hide-narrow' }, new Date(j.started).toLocaleString()),
          el('td', {}, dur(j.seconds)),
          el(
            'td',
            {},
            running && role === 'operator'
              ? el(
                  'button',
                  {
                    class: 'danger',
                    'data-action': 'cancel',
                    onclick: () => act('Cancel', j.jobId, `/api/jobs/${j.jobId}/cancel`),
                  },
                  'Cancel',
                )
              : '',
          ),
        );
      }),
    );
    if (r.jobs.length === 0) body.replaceChildren(el('tr', {}, el('td', { colspan: 9, class: 'muted' }, 'no jobs')));
  });
  const query = q.toString();
  // first the rows as visibility has them (fast); then the stream's full rows (progress, queue position, eval loss)
  api(`/api/jobs?${query}${query ? '&' : ''}brief=1`)
    .then(drawn, (e) => drawn({ error: e.message }))
    .finally(() => follow(`/api/jobs/stream?${query}`, drawn));
}

// ---------------------------------------------------------------- a job
/** The loss chart: train loss by step (the newest attempt's value wins), eval loss as dots. */
function lossChart(svg, train, evals) {
  const W = 800;
  const H = 260;
  const pad = 36;
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const pts = [...train.entries()].sort((a, b) => a[0] - b[0]);
  const ev = [...evals.entries()].sort((a, b) => a[0] - b[0]);
  const all = [...pts, ...ev];
  if (all.length === 0) {
    const t = svgEl('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' });
    t.textContent = 'no steps yet';
    svg.append(t);
    return;
  }
  const maxX = Math.max(1, ...all.map((p) => p[0]));
  const ys = all.map((p) => p[1]);
  const lo = Math.min(...ys);
  const hi = Math.max(...ys, lo + 1e-9);
  const x = (s) => pad + ((W - 2 * pad) * s) / maxX;
  const y = (v) => H - pad - ((H - 2 * pad) * (v - lo)) / (hi - lo);
  svg.append(
    svgEl('path', {
      class: 'train',
      d: pts.map((p, i) => `${i ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(''),
    }),
  );
  for (const p of ev) svg.append(svgEl('circle', { class: 'eval', cx: x(p[0]), cy: y(p[1]), r: 3.5 }));
  for (const [v, yy] of [
    [hi, pad],
    [lo, H - pad],
  ]) {
    const t = svgEl('text', { x: 2, y: yy + 4 });
    t.textContent = v.toFixed(3);
    svg.append(t);
  }
  const t = svgEl('text', { x: W - pad, y: H - 8, 'text-anchor': 'end' });
  t.textContent = `step ${maxX}`;
  svg.append(t);
  svg.setAttribute('data-points', String(pts.length));
}

function timelineRows(events, status) {
  const attempts = new Map();
  for (const e of events) {
    const a = attempts.get(e.attempt) || {
      attempt: e.attempt,
      agent: e.agent_id,
      first: null,
      last: null,
      from: null,
      steps: 0,
      t0: e.time,
      t1: e.time,
    };
    a.t1 = e.time;
    if (e.type === 'started') {
      a.from = e.resumed_from_step || 0;
      a.agent = e.agent_id;
    }
    if (e.type === 'step') {
      a.first = a.first ?? e.step;
      a.last = e.step;
      a.steps += 1;
    }
    attempts.set(e.attempt, a);
  }
  const list = [...attempts.values()].sort((a, b) => a.attempt - b.attempt);
  return list.map((a, i) => {
    // the attempt after a training attempt that ended early; an evaluation attempt follows a finished one
    const next = list.slice(i + 1).find((b) => b.steps > 0 || b.from !== null);
    const evaluation = a.steps === 0 && a.from === null;
    const lost = next && a.last !== null && next.from !== null ? Math.max(0, a.last - next.from) : null;
    const gap = next ? next.t0 - a.t1 : null;
    return el(
      'tr',
      {},
      el('td', {}, String(a.attempt)),
      el('td', {}, a.agent),
      el('td', {}, evaluation ? 'evaluation' : a.from ? `resumed at ${a.from}` : 'from the start'),
      el('td', {}, a.first === null ? '-' : `${a.first}–${a.last}`),
      el(
        'td',
        {},
        next
          ? `ended early; the next attempt started ${gap.toFixed(1)} s later, ${lost ?? '-'} steps lost`
          : i < list.length - 1
            ? 'trained to the end'
            : status,
      ),
    );
  });
}

function metricsTable(view) {
  const r = view.result;
  if (!r) return el('p', { class: 'muted' }, 'no evaluation yet');
  const gates = (r.gates || []).map((g) =>
    el('li', { class: g.passed ? 'pass' : 'fail' }, `${g.passed ? 'pass' : 'fail'}: ${g.message}`),
  );
  return el(
    'div',
    {},
    el(
      'table',
      { id: 'evaluation' },
      el(
        'thead',
        {},
        el(
          'tr',
          {},
          ['metric', 'base', 'fine-tuned', 'delta'].map((h) => el('th', {}, h)),
        ),
      ),
      el(
        'tbody',
        {},
        view.metrics.map((m) =>
          el(
            'tr',
            {},
            el('td', {}, m.name),
            el('td', {}, num(m.base)),
            el('td', {}, num(m.tuned)),
            el('td', {}, num(m.delta)),
          ),
        ),
      ),
    ),
    el('h2', {}, 'Gates'),
    gates.length ? el('ul', { id: 'gates' }, gates) : el('p', { class: 'muted', id: 'gates' }, 'no gates'),
    el('h2', {}, 'Example answers'),
    el(
      'div',
      { class: 'scroll' },
      el(
        'table',
        {},
        el(
          'thead',
          {},
          el(
            'tr',
            {},
            ['prompt', 'reference', 'base', 'fine-tuned'].map((h) => el('th', {}, h)),
          ),
        ),
        el(
          'tbody',
          {},
          (r.evaluation.examples || []).slice(0, 10).map((x) =>
            el(
              'tr',
              {},
              [x.prompt, x.reference, x.base, x.tuned].map((t) => el('td', {}, el('pre', {}, t))),
            ),
          ),
        ),
      ),
    ),
    el('h2', {}, 'Data'),
    el('pre', {}, JSON.stringify(r.data, null, 1)),
    el('h2', {}, 'Adapter'),
    el(
      'ul',
      {},
      r.adapter.files.map((f) =>
        el(
          'li',
          {},
          el('a', { href: `/api/jobs/${encodeURIComponent(view.id)}/adapter/${encodeURIComponent(f.name)}` }, f.name),
          ` (${f.bytes} bytes, sha256 ${f.sha256.slice(0, 12)}…)`,
        ),
      ),
    ),
  );
}

async function jobPage(id) {
  document.title = `${id} · tunefleet`;
  let view;
  try {
    view = await api(`/api/jobs/${encodeURIComponent(id)}`);
  } catch (e) {
    main.replaceChildren(
      el(
        'div',
        { class: 'notfound', id: 'notfound' },
        el('h1', {}, e.status === 404 ? 'Job not found' : 'Cannot show this job'),
        el('p', {}, e.message),
        el('a', { href: '/jobs' }, 'all jobs'),
      ),
    );
    return;
  }
  view.id = id;
  const who = await api('/api/whoami').catch(() => ({}));
  const head = el('div', { class: 'card', id: 'summary' });
  const svg = svgEl('svg', { class: 'chart', id: 'loss' });
  const timeline = el('tbody', {});
  main.replaceChildren(
    el('h1', {}, id),
    head,
    el('h2', {}, 'Loss (train line, eval dots)'),
    svg,
    el('h2', {}, 'Attempts'),
    el(
      'div',
      { class: 'scroll' },
      el(
        'table',
        { id: 'timeline' },
        el(
          'thead',
          {},
          el(
            'tr',
            {},
            ['attempt', 'agent', 'start', 'steps', 'end'].map((h) => el('th', {}, h)),
          ),
        ),
        timeline,
      ),
    ),
    el('h2', {}, 'Placement (explain)'),
    el(
      'div',
      { class: 'scroll' },
      el(
        'table',
        { id: 'decisions' },
        el(
          'thead',
          {},
          el(
            'tr',
            {},
            ['time', 'attempt', 'outcome', 'summary'].map((h) => el('th', {}, h)),
          ),
        ),
        el(
          'tbody',
          {},
          view.decisions.map((d) =>
            el(
              'tr',
              {},
              el('td', {}, new Date(d.time).toLocaleTimeString()),
              el('td', {}, `${d.attempt} (${d.purpose})`),
              el('td', {}, d.chosen ? `placed on ${d.chosen}` : d.impossible ? 'impossible' : 'waiting'),
              el('td', {}, d.summary.slice(0, 600)),
            ),
          ),
        ),
      ),
    ),
    el('h2', {}, 'Evaluation'),
    el('div', { id: 'result' }, metricsTable(view)),
  );
  const train = new Map();
  const evals = new Map();
  const attemptOf = new Map();
  let events = [];
  let status = view.status;
  const drawHead = () => {
    const s = status;
    const steps = events.filter((e) => e.type === 'step');
    const last = steps[steps.length - 1];
    let eta = '-';
    if (last && steps.length > 5) {
      const recent = steps.slice(-20);
      const rate = (recent.length - 1) / Math.max(1e-6, recent[recent.length - 1].time - recent[0].time);
      eta = rate > 0 ? dur((last.steps_total - last.step) / rate) : '-';
    }
    const running = view.temporal === 'RUNNING';
    const members =
      s && s.members && s.members.length
        ? s.members.map((m) => `${m.agentId} (rank ${m.rank})`).join(', ')
        : (s && s.agentId) || '-';
    // (replaceChildren would write a null as the text 'null')
    head.replaceChildren(
      ...[
        el(
          'div',
          {},
          s ? badge(s.state) : badge(stateOf(view.temporal)),
          ' ',
          s && s.queuePosition ? `queue #${s.queuePosition}` : '',
        ),
        el('div', {}, `attempt/epoch ${s ? `${s.attempt}/${s.epoch}` : '-'} · agent ${members}`),
        el(
          'div',
          { id: 'progress' },
          last ? `step ${last.step}/${last.steps_total}, loss ${last.loss.toFixed(4)}, ETA ${eta}` : 'no step yet',
        ),
        s && s.message ? el('div', { class: 'muted' }, s.message) : null,
        view.failure ? el('div', { class: 'fail' }, view.failure) : null,
        el(
          'div',
          { class: 'actions' },
          who.temporalUi
            ? el(
                'a',
                {
                  href: `${who.temporalUi}/namespaces/default/workflows/${encodeURIComponent(id)}`,
                  target: '_blank',
                  rel: 'noopener',
                },
                'Temporal workflow',
              )
            : null,
          running && role === 'operator'
            ? el(
                'button',
                {
                  class: 'danger',
                  'data-action': 'cancel',
                  onclick: () => act('Cancel', id, `/api/jobs/${id}/cancel`),
                },
                'Cancel',
              )
            : null,
        ),
      ].filter(Boolean),
    );
    timeline.replaceChildren(...timelineRows(events, s ? s.state : stateOf(view.temporal)));
  };
  let pending = false;
  const redraw = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      lossChart(svg, train, evals);
      drawHead();
    });
  };
  const add = (e) => {
    events.push(e);
    if (e.type === 'step' && (attemptOf.get(`t${e.step}`) || 0) <= e.attempt) {
      train.set(e.step, e.loss);
      attemptOf.set(`t${e.step}`, e.attempt);
    }
    if (e.type === 'eval' && (attemptOf.get(`e${e.step}`) || 0) <= e.attempt) {
      evals.set(e.step, e.eval_loss);
      attemptOf.set(`e${e.step}`, e.attempt);
    }
  };
  // the stored events come with the page; the stream replays from the first and goes on live
  const seen = new Set();
  follow(`/api/jobs/${encodeURIComponent(id)}/events`, (e) => {
    const key = `${e.attempt}/${e.type}/${e.time}/${e.step ?? ''}`;
    if (seen.has(key)) return;
    seen.add(key);
    add(e);
    redraw();
  });
  follow(`/api/jobs/${encodeURIComponent(id)}/status`, (d) => {
    if (d.error) return;
    const ended = view.temporal === 'RUNNING' && d.temporal !== 'RUNNING';
    view.temporal = d.temporal;
    view.failure = d.failure;
    status = d.status;
    if (ended)
      api(`/api/jobs/${encodeURIComponent(id)}`).then(
        (v) => {
          v.id = id;
          view = Object.assign(view, v);
          document.getElementById('result').replaceChildren(metricsTable(view));
        },
        () => {},
      );
    redraw();
  });
  redraw();
}

// ---------------------------------------------------------------- router
(async () => {
  // the page carries what /api/whoami answers (one round trip less before the first draw)
  const boot = document.getElementById('boot');
  const who = boot ? JSON.parse(boot.textContent) : await api('/api/whoami').catch(() => ({ role: 'viewer' }));
  role = who.role;
  choices = { states: who.states || [], methods: who.methods || [] };
  document.getElementById('role').textContent = role === 'operator' ? 'operator' : 'read-only';
  const path = location.pathname;
  const job = /^\/jobs\/([^/]+)$/.exec(path);
  if (path === '/fleet') fleetPage();
  else if (path === '/jobs') jobsPage();
  else if (job) jobPage(decodeURIComponent(job[1]));
  else
    main.replaceChildren(
      el(
        'div',
        { class: 'notfound', id: 'notfound' },
        el('h1', {}, 'Not found'),
        el('p', {}, `nothing at ${path}`),
        el('a', { href: '/fleet' }, 'the fleet'),
      ),
    );
})();
