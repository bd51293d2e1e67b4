// `tunefleet fleet` and `tunefleet cordon|uncordon|drain`: the operator's view and levers.
import { printable } from '../../shared/records';
import {
  advertDevices,
  deviceLabel,
  allocatableBytes,
  type Advert,
  type DesiredState,
  type DesiredStateRecord,
  ErrorCode,
  TunefleetError,
  ID_PATTERN,
} from '../../shared';
import { FleetView, type FleetEntry } from '../fleet';
import { ADVERT_TTL_MS, type Nats } from '../nats';
import { table } from './format';

const GiB = 2 ** 30;
const gib = (b: number): string => (b / GiB).toFixed(1);

/** The fleet table's rows; what adverts carry is text from other processes, printed without control characters. */
export function fleetRows(entries: FleetEntry[]): string[][] {
  return rowsOf(entries).map((row) => row.map(printable));
}

function rowsOf(entries: FleetEntry[]): string[][] {
  return entries.map(({ advert: a }) => {
    // which job runs on which device: job@GPU 3 (a CPU agent's one device goes unsaid)
    const devices = advertDevices(a);
    const on = (uuids: string[]): string =>
      uuids
        .filter((u) => u !== 'cpu')
        .map((u) => {
          const d = devices.find((x) => x.uuid === u);
          return `@${d ? deviceLabel(d) : u}`;
        })
        .join('');
    const rank = (s: (typeof a.sessions)[number]): string =>
      s.rank !== undefined ? ` rank ${s.rank}/${s.nodes ?? '?'}` : '';
    const held = a.sessions.map((s) => `${s.job_id}${on(s.devices)}${rank(s)}`).join(',') || '-';
    const jobs = a.max_sessions === undefined ? held : `${held} (${a.sessions.length}/${a.max_sessions})`;
    if (a.accelerator === 'cuda' && a.gpus.length > 0) {
      const names = [...new Set(a.gpus.map((g) => g.name))].join('+');
      const used = a.gpus.reduce((s, g) => s + g.memory_used, 0);
      const total = a.gpus.reduce((s, g) => s + g.memory_total, 0);
      const util = a.gpus.map((g) => (g.utilization_pct === null ? '-' : `${g.utilization_pct}%`)).join('/');
      const temp = a.gpus.map((g) => (g.temperature_c === null ? '-' : `${g.temperature_c}C`)).join('/');
      const cuda = a.gpus[0]?.cuda_version ?? '-';
      const migs = advertDevices(a).filter((d) => d.kind === 'mig').length;
      return [
        a.agent_id,
        a.state,
        `${a.gpus.length}x ${names}${migs > 0 ? ` as ${migs} MIG` : ''}`,
        `${gib(used)}/${gib(total)} GiB`,
        util,
        temp,
        cuda,
        jobs,
      ];
    }
    return [
      a.agent_id,
      a.state,
      `cpu (${a.cpu.cores} cores)`,
      `${gib(a.memory.total - a.memory.available)}/${gib(a.memory.total)} GiB`,
      '-',
      '-',
      '-',
      jobs,
    ];
  });
}

export function fleetTable(entries: FleetEntry[]): string {
  if (entries.length === 0) return 'no agent is advertising';
  return table(['agent', 'state', 'gpu', 'memory used/total', 'util', 'temp', 'cuda', 'jobs'], fleetRows(entries));
}

export function fleetJson(entries: FleetEntry[]): object[] {
  return entries.map((e) => ({
    ...e.advert,
    // an older agent's advert has no devices: the ones placement derives from its GPUs
    devices: advertDevices(e.advert),
    allocatable_bytes: allocatableBytes(e.advert),
    desired_state: e.desired?.state ?? null,
    last_seen_ms_ago: Date.now() - e.lastSeen,
  }));
}

export async function openFleet(n: Nats): Promise<FleetView> {
  const view = new FleetView(
    await n.adverts(),
    ADVERT_TTL_MS,
    (m) => process.stderr.write(`${m}\n`),
    Date.now,
    await n.agentStates(),
  );
  await view.start();
  return view;
}

/** Record the operator's intent, then wait (briefly) for the agent to confirm in its advert. */
export async function setAgentState(
  n: Nats,
  agentId: string,
  state: DesiredState,
  by: string,
  waitMs = 5000,
): Promise<{ confirmed: Advert['state'] | null }> {
  if (!ID_PATTERN.test(agentId))
    throw new TunefleetError(ErrorCode.FlagInvalid, `'${agentId}' is not an agent id`, { field: 'agent' });
  const states = await n.agentStates();
  const record: DesiredStateRecord = { state, by, time: Date.now() };
  await states.put(agentId, JSON.stringify(record));
  const accepted: Advert['state'][] = state === 'draining' ? ['draining', 'drained'] : [state];
  const adverts = await n.adverts();
  const deadline = Date.now() + waitMs;
  while (Date.now() < deadline) {
    const e = await adverts.get(agentId);
    if (e && e.operation === 'PUT') {
      try {
        const s = e.json<{ state: Advert['state'] }>().state;
        if (accepted.includes(s)) return { confirmed: s };
      } catch {
        // a malformed advert: keep waiting, the agent's next one may be fine
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { confirmed: null };
}
