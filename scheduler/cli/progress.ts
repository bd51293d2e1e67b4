// A job's events as they come, for people: one line per event worth attention
// (formatEvent) and the live progress line (Progress) that `submit --follow` and `watch`
// redraw on a terminal.
import type { JobEvent } from '../../shared';
import { printable } from '../../shared/records';
import { count, f4 } from './format';

/**
 * One line per event worth a person's attention; null for the rest. What an event carries is text from another
 * process: control characters (terminal escape sequences) never reach the terminal.
 */
export function formatEvent(e: JobEvent): string | null {
  const line = describeEvent(e);
  return line === null ? null : printable(line);
}

function describeEvent(e: JobEvent): string | null {
  switch (e.type) {
    case 'started':
      return (
        `started on ${e.agent_id} (attempt ${e.attempt}, ${e.device}` +
        `${e.world_size > 1 ? ` x ${e.world_size} processes` : ''}, ${e.dtype}): ` +
        `${count(e.trainable_params)} trainable of ${count(e.total_params)} parameters, ` +
        `${e.train_records} records, ${e.steps_total} steps` +
        (e.resumed_from_step ? `, resumed from step ${e.resumed_from_step}` : '')
      );
    case 'step':
      return (
        `step ${String(e.step).padStart(4)}/${e.steps_total}  loss ${e.loss.toFixed(4)}  ` +
        `lr ${e.lr.toExponential(2)}  ${e.tokens_per_s.toFixed(0)} tok/s`
      );
    case 'checkpoint':
      return `checkpoint at step ${e.step} (${e.reason})`;
    case 'eval':
      return (
        `eval loss ${e.eval_loss.toFixed(4)} (perplexity ${e.perplexity.toFixed(2)})` +
        (e.best_step !== undefined && e.best_step !== null
          ? `, best ${f4(e.best_eval_loss)} at step ${e.best_step}`
          : '')
      );
    case 'oom':
      return `out of memory at step ${e.step} (micro-batch ${e.micro_batch_size} x ${e.sequence_length} tokens)`;
    case 'finished':
      return `training ${e.stopped} at step ${e.step}`;
    case 'paused':
      return `paused at step ${e.step}/${e.steps_total} (a sweep's rung), checkpointed; the sweep promotes or stops it`;
    case 'error':
      return `trainer error ${e.code}: ${e.message}`;
    case 'log':
      return e.level === 'warning' || e.level === 'error' || /trainable|base:|fine-tuned:|^gang of/.test(e.message)
        ? e.message
        : null;
    default:
      return null;
  }
}

/** A live progress line from a job's events (fed in order): step/total, loss, tokens/s, ETA, agent, attempt. */
export class Progress {
  private step = 0;
  private total = 0;
  private loss: number | null = null;
  private rate: number | null = null;
  private agent = '-';
  private attempt = 0;
  private startedAt: number | null = null;
  private startStep = 0;
  private lastAt: number | null = null;

  /** true when the line changed */
  update(e: JobEvent): boolean {
    if (e.type === 'started') {
      this.total = e.steps_total || this.total;
      this.agent = e.agent_id;
      this.attempt = e.attempt || this.attempt;
      this.startStep = e.resumed_from_step;
      this.step = this.startStep;
      this.startedAt = null;
      return true;
    }
    if (e.type !== 'step') return false;
    this.step = e.step;
    this.total = e.steps_total || this.total;
    this.loss = e.loss;
    this.rate = e.tokens_per_s;
    this.agent = e.agent_id;
    this.attempt = e.attempt || this.attempt;
    const t = e.time * 1000;
    this.startedAt ??= t;
    this.lastAt = t;
    return true;
  }

  line(width = 24): string {
    const frac = this.total > 0 ? Math.min(1, this.step / this.total) : 0;
    const filled = Math.round(frac * width);
    const done = this.step - this.startStep;
    let eta = '-';
    if (this.startedAt !== null && this.lastAt !== null && done > 1 && this.total > this.step) {
      const perStep = (this.lastAt - this.startedAt) / (done - 1);
      eta = duration(perStep * (this.total - this.step));
    } else if (this.total > 0 && this.step >= this.total) eta = '0s';
    const bar = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}]`;
    const loss = this.loss === null ? '-' : this.loss.toFixed(4);
    const rate = this.rate === null ? '-' : count(Math.round(this.rate));
    return (
      `${bar} step ${this.step}/${this.total || '?'}  loss ${loss}  ${rate} tok/s  ETA ${eta}  ` +
      `${this.agent}  attempt ${this.attempt || '-'}`
    );
  }
}

export function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
