// A finished job's evaluation generations for people: export a sample to grade, import
// the graded file (checked against the stored generations, every import kept), and the
// result with the newest review.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import {
  ADAPTERS_BUCKET,
  ErrorCode,
  TunefleetError,
  latestReviewObjectName,
  reviewObjectPrefix,
  type JobResult,
  type ReviewSummary,
} from '../../../shared';
import { readReview, sampleRows, summarise, writeReview, type OutputRow, type ReviewFormat } from '../review';
import type { JobClient } from './jobs';

export class Reviews {
  constructor(private readonly jobs: JobClient) {}

  private async store(): Promise<Awaited<ReturnType<Awaited<ReturnType<JobClient['nats']>>['objects']>>> {
    return (await this.jobs.nats()).objects(ADAPTERS_BUCKET);
  }

  /**
   * The result with the newest imported human review, if any: one that graded other generations than the job's (its
   * outputs_sha256 is not theirs) is left out with a warning.
   */
  async result(jobId: string): Promise<JobResult> {
    const r = await this.jobs.result(jobId);
    const blob = await (await this.store()).getBlob(latestReviewObjectName(jobId));
    if (!blob) return r;
    const review = JSON.parse(new TextDecoder().decode(blob)) as { summary: ReviewSummary; outputs_sha256?: string };
    const want = r.evaluation.outputs?.sha256;
    if (want && review.outputs_sha256 !== want)
      console.warn(
        `[tunefleet] the stored review of ${jobId} is not of this job's generations (sha256 ` +
          `${String(review.outputs_sha256).slice(0, 12)}…, expected ${want.slice(0, 12)}…): left out`,
      );
    else r.review = review.summary;
    return r;
  }

  /** Every evaluation generation of a finished job (prompt, reference, base, tuned). */
  async outputs(jobId: string): Promise<OutputRow[]> {
    const r = await this.jobs.result(jobId);
    const object = r.evaluation.outputs?.object;
    if (!object)
      throw new TunefleetError(
        ErrorCode.ObjectMissing,
        `job '${jobId}' stored no evaluation generations ` +
          '(evaluation.exact_match off, or a job from before review export existed)',
      );
    const blob = await (await this.store()).getBlob(object);
    if (!blob)
      throw new TunefleetError(
        ErrorCode.ObjectMissing,
        `the evaluation generations of '${jobId}' (${object}) are missing from the store`,
      );
    const want = r.evaluation.outputs?.sha256;
    const got = createHash('sha256').update(blob).digest('hex');
    if (want && got !== want)
      throw new TunefleetError(
        ErrorCode.ChecksumMismatch,
        `the evaluation generations of '${jobId}' (${object}) were replaced in the store: sha256 ` +
          `${got.slice(0, 12)}…, the evaluation recorded ${want.slice(0, 12)}…`,
      );
    return new TextDecoder()
      .decode(blob)
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as OutputRow);
  }

  async export(
    jobId: string,
    o: { sample: number; seed: number; format: ReviewFormat },
  ): Promise<{ text: string; rows: number; of: number }> {
    const rows = await this.outputs(jobId);
    const picked = sampleRows(rows, o.sample, o.seed);
    return { text: writeReview(picked, o.format), rows: picked.length, of: rows.length };
  }

  /** Check a filled-in review file against the stored generations, then store it (one object per import). */
  async import(jobId: string, file: string, format: ReviewFormat): Promise<ReviewSummary> {
    const text = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
      throw new TunefleetError(ErrorCode.SpecUnreadable, `cannot read the review file (${e.code ?? String(e)})`, {
        file,
      });
    });
    const graded = readReview(text, format, file, await this.outputs(jobId));
    const now = new Date();
    const summary = summarise(graded, basename(file), now);
    // the generations it graded (already checked against the evaluation's digest)
    const outputsSha256 = (await this.jobs.result(jobId)).evaluation.outputs?.sha256;
    const body = new TextEncoder().encode(
      JSON.stringify({ summary, outputs_sha256: outputsSha256, rows: graded }, null, 1),
    );
    const store = await this.store();
    // every import is kept; the newest is also under a fixed name for `result`
    await store.putBlob({ name: `${reviewObjectPrefix(jobId)}${now.toISOString().replace(/[:.]/g, '-')}.json` }, body);
    await store.putBlob({ name: latestReviewObjectName(jobId) }, body);
    return summary;
  }
}
