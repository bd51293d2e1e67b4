// Prometheus metrics, served the same way by every agent and control worker: GET /metrics
// answers the process's own registry (prom-client) followed by the Temporal SDK's worker
// metrics (the SDK's own exporter, bound on loopback at a port chosen when the process
// installs its Temporal runtime), in one text-format page. Off the public interface by
// default: the address is the operator's to choose (--metrics-address host:port, `off`).
// Does I/O (an HTTP server, the runtime): workflow code never imports this module.
import { DefaultLogger, Runtime, type LogLevel } from '@temporalio/worker';
import { createServer as createHttpServer, get } from 'node:http';
import { createServer as createTcpServer } from 'node:net';
import type { Registry } from 'prom-client';
import { ErrorCode, TunefleetError } from './errors';

/** Where the SDK's own exporter listens in this process (null: not installed by us, or no port was free). */
let sdkMetricsUrl: string | null = null;

const freeLoopbackPort = (): Promise<number | null> =>
  new Promise((resolve) => {
    const s = createTcpServer();
    s.once('error', () => resolve(null));
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : null));
    });
  });

/**
 * Install this process's Temporal runtime once: the SDK logs at WARN unless TUNEFLEET_LOG_LEVEL says otherwise, and
 * its worker metrics (task latencies, slots, polls, activity outcomes) go to a Prometheus exporter on loopback, which
 * /metrics appends. A second call (a second worker in one process) keeps the first runtime.
 */
export async function installRuntime(): Promise<void> {
  if (sdkMetricsUrl !== null) return;
  const port = await freeLoopbackPort();
  const logger = new DefaultLogger((process.env.TUNEFLEET_LOG_LEVEL ?? 'WARN') as LogLevel);
  try {
    Runtime.install({
      logger,
      ...(port
        ? {
            telemetryOptions: {
              metrics: {
                metricPrefix: 'temporal_',
                prometheus: {
                  bindAddress: `127.0.0.1:${port}`,
                  countersTotalSuffix: true,
                  unitSuffix: true,
                  useSecondsForDurations: true,
                },
              },
            },
          }
        : {}),
    });
    if (port) sdkMetricsUrl = `http://127.0.0.1:${port}/metrics`;
  } catch {
    // already installed in this process by someone else: its telemetry stands
  }
}

/** `host:port` (port 0: any free one) or `off` -> where to listen; refused naming the flag when it is neither. */
export function parseMetricsAddress(text: string, field: string): { host: string; port: number } | null {
  if (text === 'off') return null;
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  const port = Number(m?.[2]);
  if (!m || port > 65535)
    throw new TunefleetError(ErrorCode.FlagInvalid, `'${text}' must be HOST:PORT (port 0: any free one) or off`, {
      field,
    });
  return { host: (m[1] as string).replace(/^\[|\]$/g, ''), port };
}

const sdkText = (): Promise<string> =>
  new Promise((resolve) => {
    if (!sdkMetricsUrl) return resolve('');
    const req = get(sdkMetricsUrl, { timeout: 2000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(res.statusCode === 200 ? Buffer.concat(chunks).toString('utf8') : ''));
      res.on('error', () => resolve(''));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(''));
  });

export interface MetricsServer {
  /** http://host:port/metrics */
  url: string;
  close(): Promise<void>;
}

/**
 * Serve `registry` (and the SDK's metrics) on GET /metrics at `where`. An address that cannot be opened (taken, not
 * this host's) is logged and metrics are not served: the process itself keeps running.
 */
export async function serveMetrics(
  where: { host: string; port: number },
  registry: Registry,
  log: (m: string) => void,
): Promise<MetricsServer | null> {
  const server = createHttpServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: GET /metrics\n');
      return;
    }
    void Promise.all([registry.metrics(), sdkText()]).then(
      ([own, sdk]) => res.writeHead(200, { 'content-type': registry.contentType }).end(`${own}\n${sdk}`),
      (e: unknown) => {
        log(`metrics failed: ${String(e)}`);
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${String(e)}\n`);
      },
    );
  });
  const opened = await new Promise<string | null>((resolve) => {
    server.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    server.listen(where.port, where.host, () => resolve(null));
  });
  if (opened) {
    log(`warning: metrics not served: ${where.host}:${where.port} cannot be opened (${opened}); see --metrics-address`);
    return null;
  }
  const a = server.address();
  const port = typeof a === 'object' && a ? a.port : where.port;
  const host = where.host.includes(':') ? `[${where.host}]` : where.host;
  return {
    url: `http://${host}:${port}/metrics`,
    close: () => new Promise((r) => server.close(() => r())),
  };
}
