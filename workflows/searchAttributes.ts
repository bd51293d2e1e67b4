// Search attributes set on every fineTune workflow, so that
//   temporal workflow list --query "TunefleetState='training' AND TunefleetModel='SmolLM2-135M-Instruct'"
// works. `tunefleet up` registers them on the dev server (infra/services.ts); on another
// cluster: temporal operator search-attribute create --name TunefleetState --type Keyword (etc.).
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export const SA_JOB_ID = defineSearchAttributeKey('TunefleetJobId', SearchAttributeType.KEYWORD);
export const SA_MODEL = defineSearchAttributeKey('TunefleetModel', SearchAttributeType.KEYWORD);
export const SA_METHOD = defineSearchAttributeKey('TunefleetMethod', SearchAttributeType.KEYWORD);
export const SA_STATE = defineSearchAttributeKey('TunefleetState', SearchAttributeType.KEYWORD);

export const SEARCH_ATTRIBUTES = [SA_JOB_ID, SA_MODEL, SA_METHOD, SA_STATE];
