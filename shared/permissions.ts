// Least privilege on NATS, per role: which subjects each identity may publish and subscribe
// to. nats-server enforces these (infra/secrets.ts writes them into its configuration); the
// README's Security table says the same in words. Pure data.
//
// JetStream is driven by subjects: a KV put is a publish to $KV.<bucket>.<key>, an object
// write to $O.<bucket>.…, and every management call a request on $JS.API.<verb>.<stream>.
// Only admin may create, update, purge or delete a stream or bucket (the others bind to
// existing ones); an agent may write only its own advert and state keys, and asks a control
// worker to commit its checkpoints on its own subject (only control writes the commits).
// Every identity gets replies on its own inbox prefix, which nobody else may read.
import {
  ADAPTERS_BUCKET,
  ADVERTS_BUCKET,
  AGENT_STATES_BUCKET,
  CHECKPOINTS_BUCKET,
  COMMIT_SUBJECTS,
  COMMITS_BUCKET,
  commitSubject,
  DATASETS_BUCKET,
  DECISIONS_BUCKET,
  EVENTS_STREAM,
  EVENTS_SUBJECTS,
  ID_PATTERN,
  LEASES_BUCKET,
  QUEUE_BUCKET,
} from './names';

export const ROLES = ['admin', 'control', 'cli', 'operator'] as const;
export type Role = (typeof ROLES)[number];

/** An identity's name: a role, or agent-<id>; its credentials are <name>.nk, .crt and .key. */
export const agentIdentity = (agentId: string): string => `agent-${agentId}`;

export function isIdentity(name: string): boolean {
  return (ROLES as readonly string[]).includes(name) || (name.startsWith('agent-') && ID_PATTERN.test(name.slice(6)));
}

export interface Permissions {
  publish: { allow: string[] };
  subscribe: { allow: string[] };
  /** may answer requests it received (the commit service) */
  allow_responses?: boolean;
}

/** Each identity's replies come to its own inbox prefix: nobody else may subscribe there. */
export const inboxPrefix = (name: string): string => `_INBOX_${name}`;

const api = (s: string): string => `$JS.API.${s}`;
const kvStream = (bucket: string): string => `KV_${bucket}`;
const osStream = (bucket: string): string => `OBJ_${bucket}`;

/** Reading a stream: its info, single messages, and (ordered or pull) consumers of its own. */
function readStream(stream: string): string[] {
  return [
    api(`STREAM.INFO.${stream}`),
    api(`STREAM.MSG.GET.${stream}`),
    api(`DIRECT.GET.${stream}`),
    api(`DIRECT.GET.${stream}.>`),
    api(`CONSUMER.CREATE.${stream}`),
    api(`CONSUMER.CREATE.${stream}.>`),
    api(`CONSUMER.INFO.${stream}.>`),
    api(`CONSUMER.DELETE.${stream}.>`),
    api(`CONSUMER.MSG.NEXT.${stream}.>`),
    `$JS.FC.${stream}.>`,
    `$JS.ACK.${stream}.>`,
  ];
}

const kvRead = (bucket: string): string[] => readStream(kvStream(bucket));
/** `key` may be a wildcard: '>' is every key */
const kvWrite = (bucket: string, key = '>'): string[] => [`$KV.${bucket}.${key}`];
const osRead = (bucket: string): string[] => readStream(osStream(bucket));
/** writing an object replaces its chunks: the old ones are purged by subject (the store's own API) */
const osWrite = (bucket: string): string[] => [
  ...osRead(bucket),
  `$O.${bucket}.>`,
  api(`STREAM.PURGE.${osStream(bucket)}`),
];
const eventsRead = (): string[] => readStream(EVENTS_STREAM);

/** Every client: the account's JetStream info, stream names (finding a subject's stream). */
const COMMON_PUBLISH = [api('INFO'), api('STREAM.NAMES')];

/** `publish` and the identity's own inbox (replies, consumer deliveries), and `subscribe`. */
function grant(name: string, publish: string[], subscribe: string[] = [], allowResponses = false): Permissions {
  return {
    publish: { allow: [...new Set([...COMMON_PUBLISH, ...publish])] },
    subscribe: { allow: [`${inboxPrefix(name)}.>`, ...subscribe] },
    ...(allowResponses ? { allow_responses: true } : {}),
  };
}

/** The permissions of an identity (a role or agent-<id>); admin: everything. */
export function permissionsFor(name: string): Permissions {
  if (!isIdentity(name)) throw new Error(`'${name}' is not a tunefleet identity (a role or agent-<id>)`);
  switch (name) {
    case 'admin':
      return { publish: { allow: ['>'] }, subscribe: { allow: ['>'] } };
    case 'control': // control workers: placement, data preparation, registration, the commit service
      return grant(
        name,
        [
          ...kvRead(ADVERTS_BUCKET),
          ...kvRead(AGENT_STATES_BUCKET),
          ...[LEASES_BUCKET, QUEUE_BUCKET, DECISIONS_BUCKET].flatMap((b) => [...kvRead(b), ...kvWrite(b)]),
          ...kvRead(COMMITS_BUCKET),
          ...kvWrite(COMMITS_BUCKET),
          ...osRead(DATASETS_BUCKET),
          ...osWrite(DATASETS_BUCKET),
          ...osRead(CHECKPOINTS_BUCKET),
          ...osRead(ADAPTERS_BUCKET),
          ...osWrite(ADAPTERS_BUCKET),
          ...eventsRead(),
        ],
        [COMMIT_SUBJECTS],
        true,
      );
    case 'cli': // submitters: upload datasets, follow events, download results, import reviews
      return grant(name, [
        ...kvRead(ADVERTS_BUCKET),
        ...kvRead(AGENT_STATES_BUCKET),
        ...kvRead(DECISIONS_BUCKET),
        ...osRead(DATASETS_BUCKET),
        ...osWrite(DATASETS_BUCKET),
        ...osRead(ADAPTERS_BUCKET),
        ...osWrite(ADAPTERS_BUCKET),
        ...eventsRead(),
      ]);
    case 'operator': // fleet intent: cordon, uncordon, drain
      return grant(name, [...kvRead(ADVERTS_BUCKET), ...kvRead(AGENT_STATES_BUCKET), ...kvWrite(AGENT_STATES_BUCKET)]);
    default: {
      const id = name.slice('agent-'.length);
      return grant(name, [
        ...kvRead(ADVERTS_BUCKET),
        ...kvWrite(ADVERTS_BUCKET, id),
        ...kvRead(AGENT_STATES_BUCKET),
        ...kvWrite(AGENT_STATES_BUCKET, id),
        commitSubject(id),
        ...osRead(DATASETS_BUCKET),
        ...osRead(CHECKPOINTS_BUCKET),
        ...osWrite(CHECKPOINTS_BUCKET),
        ...osWrite(ADAPTERS_BUCKET),
        EVENTS_SUBJECTS,
      ]);
    }
  }
}
