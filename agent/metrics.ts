// An agent's Prometheus metrics: its devices as its advert sees them (memory, utilisation,
// temperature, the job on each), its sessions and state, and each running job's progress
// (step, loss, tokens/s, attempt) from the trainer's events. Served on /metrics with the
// Temporal SDK's worker metrics (shared/metrics.ts).
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { AGENT_STATES, advertDevices, deviceLabel, type Advert } from '../shared';

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly memTotal: Gauge;
  private readonly memUsed: Gauge;
  private readonly util: Gauge;
  private readonly temp: Gauge;
  private readonly deviceJob: Gauge;
  private readonly sessions: Gauge;
  private readonly maxSessions: Gauge;
  private readonly state: Gauge;
  private readonly step: Gauge;
  private readonly loss: Gauge;
  private readonly tokens: Gauge;
  private readonly attempt: Gauge;
  private readonly steps: Counter;

  constructor(agentId: string) {
    const r = [this.registry];
    this.registry.setDefaultLabels({ agent: agentId });
    collectDefaultMetrics({ register: this.registry, prefix: 'tunefleet_agent_' });
    const g = (name: string, help: string, labelNames: string[]): Gauge =>
      new Gauge({ name, help, labelNames, registers: r });
    const dev = ['device', 'uuid'];
    this.memTotal = g('tunefleet_device_memory_total_bytes', 'memory of a device (GPU, or the CPU: RAM)', dev);
    this.memUsed = g('tunefleet_device_memory_used_bytes', 'memory in use on a device, by anyone', dev);
    this.util = g('tunefleet_device_utilization_ratio', 'GPU utilisation, 0 to 1 (nvidia-smi)', dev);
    this.temp = g('tunefleet_device_temperature_celsius', 'GPU temperature (nvidia-smi)', dev);
    this.deviceJob = g('tunefleet_device_job_info', '1 for each job attempt a device is given to', [
      ...dev,
      'job_id',
      'attempt',
    ]);
    this.sessions = g('tunefleet_agent_sessions', 'training and evaluation sessions running', []);
    this.maxSessions = g('tunefleet_agent_max_sessions', 'sessions the agent runs at once', []);
    this.state = g('tunefleet_agent_state', '1 for the state the agent is in (ready, cordoned, ...), 0 others', [
      'state',
    ]);
    const job = ['job_id', 'attempt'];
    this.step = g('tunefleet_job_step', 'the last step the trainer reported', job);
    this.loss = g('tunefleet_job_loss', 'the training loss of the last step', job);
    this.tokens = g('tunefleet_job_tokens_per_second', 'tokens per second of the last step', job);
    this.attempt = g('tunefleet_job_attempt', 'the attempt (epoch) of a job running here', ['job_id']);
    this.steps = new Counter({
      name: 'tunefleet_job_steps_total',
      help: 'training steps trained on this agent',
      labelNames: ['job_id'],
      registers: r,
    });
  }

  /** The device and agent gauges, from the advert just published (a device or session gone since is dropped). */
  advert(a: Advert): void {
    for (const m of [this.memTotal, this.memUsed, this.util, this.temp, this.deviceJob, this.state]) m.reset();
    if (a.accelerator === 'cuda') {
      for (const gpu of a.gpus) {
        const l = { device: `GPU ${gpu.index}`, uuid: gpu.uuid };
        this.memTotal.set(l, gpu.memory_total);
        this.memUsed.set(l, gpu.memory_used);
        if (gpu.utilization_pct !== null) this.util.set(l, gpu.utilization_pct / 100);
        if (gpu.temperature_c !== null) this.temp.set(l, gpu.temperature_c);
      }
    } else {
      const l = { device: 'cpu', uuid: 'cpu' };
      this.memTotal.set(l, a.memory.total);
      this.memUsed.set(l, a.memory.total - a.memory.available);
    }
    const devices = advertDevices(a);
    for (const s of a.sessions)
      for (const uuid of s.devices.length ? s.devices : ['cpu']) {
        const d = devices.find((x) => x.uuid === uuid);
        const device = d && d.kind !== 'cpu' ? deviceLabel(d) : 'cpu';
        this.deviceJob.set({ device, uuid, job_id: s.job_id, attempt: String(s.attempt) }, 1);
      }
    this.sessions.set(a.sessions.length);
    if (a.max_sessions !== undefined) this.maxSessions.set(a.max_sessions);
    for (const s of AGENT_STATES) this.state.set({ state: s }, s === a.state ? 1 : 0);
  }

  /** A step the trainer of `jobId` attempt `attempt` reported. */
  stepped(jobId: string, attempt: number, e: { step: number; loss: number; tokens_per_s: number }): void {
    const l = { job_id: jobId, attempt: String(attempt) };
    this.step.set(l, e.step);
    this.loss.set(l, e.loss);
    this.tokens.set(l, e.tokens_per_s);
    this.attempt.set({ job_id: jobId }, attempt);
    this.steps.inc({ job_id: jobId });
  }

  /** The attempt ended here: its gauges go (the step counter stays). */
  ended(jobId: string, attempt: number): void {
    const l = { job_id: jobId, attempt: String(attempt) };
    for (const m of [this.step, this.loss, this.tokens]) m.remove(l);
    this.attempt.remove({ job_id: jobId });
  }
}
