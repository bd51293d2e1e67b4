// `tunefleet chat`: a conversation with a registered adapter. The chat is a `chat` workflow of its
// own (id chat-...) that holds a place on an agent with the base model; each line the user types is
// a `turn` signal, its answer streamed here from the chat's token events; `end` closes it.
import { randomBytes } from 'node:crypto';
import { CONTROL_TASK_QUEUE, ErrorCode, TunefleetError, type JobEvent } from '../../../shared';
import type { ChatInput, ChatOutcome } from '../../../workflows/chat';
import { failureMessage } from '../messages';
import { INTERACTIVE_PRIORITY } from './generate';
import type { JobClient } from './jobs';
import { showModel } from './models';

export interface ChatOptions {
  system: string | null;
  maxNewTokens: number;
  temperature: number;
  seed: number;
  waitSeconds: number;
  /** the chat ends after this long without a turn */
  idleSeconds: number;
}

type Turn = { turn: number; resolve: (text: string) => void; reject: (e: Error) => void };

export class ChatSession {
  private turns = 0;
  private waiting: Turn | null = null;
  private readonly stop = new AbortController();
  private readonly reading: Promise<void>;
  private readonly done: Promise<ChatOutcome>;

  private constructor(
    private readonly jobs: JobClient,
    readonly id: string,
    readonly model: string,
    onEvent: (e: JobEvent) => void,
  ) {
    this.reading = jobs.events.stream(
      id,
      (e) => {
        onEvent(e);
        const w = this.waiting;
        if (e.type === 'answer' && w && e.prompt === w.turn) {
          this.waiting = null;
          w.resolve(e.text);
        }
      },
      this.stop.signal,
    );
    this.done = jobs.client.workflow
      .getHandle(id)
      .result()
      .then(
        (r) => r as ChatOutcome,
        (e: unknown) => {
          throw new TunefleetError(ErrorCode.TrainerFailed, `chat with ${model} failed: ${failureMessage(e)}`);
        },
      );
    // a failed chat fails the turn being answered
    this.done.then(
      () => this.waiting?.reject(new TunefleetError(ErrorCode.TrainerFailed, `chat ${id} ended`)),
      (e: Error) => this.waiting?.reject(e),
    );
  }

  /** Start a chat with the adapter of job `modelId` (a finished, registered one). */
  static async open(
    jobs: JobClient,
    modelId: string,
    o: ChatOptions,
    onEvent: (e: JobEvent) => void,
  ): Promise<ChatSession> {
    const record = await showModel(jobs, modelId);
    const id = `chat-${randomBytes(6).toString('hex')}`;
    const input: ChatInput = {
      jobId: id,
      model: modelId,
      spec: { ...record.spec, priority: INTERACTIVE_PRIORITY },
      adapter: record.adapter,
      maxNewTokens: o.maxNewTokens,
      temperature: o.temperature,
      seed: o.seed,
      idleSeconds: o.idleSeconds,
      submittedAt: new Date().toISOString(),
      waitSeconds: o.waitSeconds,
      system: o.system,
    };
    await jobs.client.workflow.start('chat', { taskQueue: CONTROL_TASK_QUEUE, workflowId: id, args: [input] });
    return new ChatSession(jobs, id, modelId, onEvent);
  }

  /** Ask one turn; resolves with the whole answer once its last token is here. */
  async ask(text: string): Promise<string> {
    const turn = this.turns;
    this.turns += 1;
    const answered = new Promise<string>((resolve, reject) => (this.waiting = { turn, resolve, reject }));
    try {
      await this.jobs.client.workflow.getHandle(this.id).signal('turn', text);
    } catch (e) {
      this.waiting = null;
      // the chat is over (idle past --idle, or failed): say why
      const ended = await Promise.race([
        this.done.then(
          (o) => (o.ended === 'idle' ? 'it ended after --idle seconds without a turn' : 'it has ended'),
          (err: Error) => err.message,
        ),
        new Promise<string>((r) => setTimeout(() => r(failureMessage(e)), 5000)),
      ]);
      throw new TunefleetError(ErrorCode.TrainerFailed, `chat ${this.id} cannot take a turn: ${ended}`);
    }
    return answered;
  }

  /** End the chat: its agent lets the model go; resolves with the whole conversation. */
  async end(): Promise<ChatOutcome> {
    try {
      await this.jobs.client.workflow
        .getHandle(this.id)
        .signal('end')
        .catch(() => {});
      return await this.done;
    } finally {
      this.stop.abort();
      await this.reading.catch(() => {});
    }
  }
}
