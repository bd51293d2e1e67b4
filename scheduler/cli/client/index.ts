// The CLI's view of a running stack: JobClient (job control) with its events and reviews,
// the adapter download, and the spec file a job is submitted from.
export { JobClient } from './jobs';
export { JobEvents } from './events';
export { Reviews } from './reviews';
export { downloadAdapter, downloadLogs } from './download';
export { loadSpecFile, newJobId, type LoadedSpec } from '../specfile';
export type { JobRow, ListOptions } from '../joblist';
export { failureMessage } from '../messages';
export { listModels, removeModel, showModel } from './models';
export { EXPORT_FORMATS, exportMerged, GGUF_DTYPES, MERGED_DTYPES } from './export';
export { generateAnswers, readPrompts, type GenerateOptions } from './generate';
export { ChatSession, type ChatOptions } from './chat';
export { Sweeps, loadSweepFile } from './sweeps';
