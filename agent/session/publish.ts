// Trainer events to the job's stream, in order, without blocking the trainer's reader.
import { jobEventSubject, type TrainerEvent } from '../../shared';
import { natsFailure } from '../../shared/natsconn';
import { persistently, type AgentNats } from '../nats';

export class EventPublisher {
  private chain: Promise<unknown> = Promise.resolve();
  private sent = 0;

  constructor(
    private readonly nats: AgentNats,
    private readonly jobId: string,
    private readonly attempt: number,
    private readonly agentId: string,
    private readonly log: (m: string) => void,
  ) {}

  publish(e: TrainerEvent): void {
    const body = JSON.stringify({ ...e, job_id: this.jobId, attempt: this.attempt, agent_id: this.agentId });
    // a message id per event: a publish repeated after a lost ack is stored once
    const msgID = `${this.jobId}/${this.attempt}/${this.agentId}/${(this.sent += 1)}`;
    this.chain = this.chain
      .then(() =>
        persistently(
          `event publish for ${this.jobId}`,
          () => this.nats.js.publish(jobEventSubject(this.jobId, e.type), body, { msgID }),
          this.log,
        ),
      )
      .catch((err: unknown) => this.log(`event publish failed: ${natsFailure(err)}`));
  }

  /** Resolves once every event published so far is stored (or given up on). */
  flush(): Promise<void> {
    return this.chain.then(() => undefined);
  }
}
