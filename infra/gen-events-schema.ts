// Writes agent/trainer/tunefleet_trainer/events.schema.json from the zod event types in
// shared/events.ts, so the Python side's tests check its events against the same contract.
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { trainerEventsJsonSchema } from '../shared';

const out = join(resolve(__dirname, '..', '..'), 'agent', 'trainer', 'tunefleet_trainer', 'events.schema.json');
writeFileSync(out, JSON.stringify(trainerEventsJsonSchema(), null, 1) + '\n');
console.log(`wrote ${out}`);
