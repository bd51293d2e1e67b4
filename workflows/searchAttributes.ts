// Search attributes set on every fineTune workflow, so that
//   temporal workflow list --query "TunefleetState='training' AND TunefleetModel='SmolLM2-135M-Instruct'"
// works. `tunefleet up` registers them on the dev server (infra/services.ts), `up --ha` on
// Temporal's server (infra/ha.ts); on another cluster:
//   temporal operator search-attribute create --name TunefleetState --type Keyword (etc.).
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export const SA_JOB_ID = defineSearchAttributeKey('TunefleetJobId', SearchAttributeType.KEYWORD);
export const SA_MODEL = defineSearchAttributeKey('TunefleetModel', SearchAttributeType.KEYWORD);
export const SA_METHOD = defineSearchAttributeKey('TunefleetMethod', SearchAttributeType.KEYWORD);
export const SA_STATE = defineSearchAttributeKey('TunefleetState', SearchAttributeType.KEYWORD);
/** where the current (or last) attempt runs: an agent id, a gang's members joined with + in rank order */
export const SA_AGENT = defineSearchAttributeKey('TunefleetAgent', SearchAttributeType.KEYWORD);
/** the current (or last) attempt's number, as text (every attribute is a keyword: one registration command) */
export const SA_ATTEMPT = defineSearchAttributeKey('TunefleetAttempt', SearchAttributeType.KEYWORD);

/** the registered adapter the job continues from (spec init_adapter): `models rm` refuses while a running job has it */
export const SA_PARENT = defineSearchAttributeKey('TunefleetParent', SearchAttributeType.KEYWORD);

export const SEARCH_ATTRIBUTES = [SA_JOB_ID, SA_MODEL, SA_METHOD, SA_STATE, SA_AGENT, SA_ATTEMPT, SA_PARENT];
