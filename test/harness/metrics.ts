// Reading a process's Prometheus /metrics in tests: fetched over HTTP, parsed by a
// Prometheus text-format parser (parse-prometheus-text-format, prom2json's output), and
// looked up by name and labels.
import parse, { type Family, type Sample } from 'parse-prometheus-text-format';

export type Scrape = Family[];

/** GET `url` and parse it; the parser throws on text that is not the Prometheus format. */
export async function scrape(url: string): Promise<Scrape> {
  const res = await fetch(url);
  if (res.status !== 200) throw new Error(`${url}: HTTP ${res.status}: ${await res.text()}`);
  return parse(await res.text());
}

/** The samples of `name` whose labels include `labels`. */
export function samples(s: Scrape, name: string, labels: Record<string, string> = {}): Sample[] {
  const family = s.find((f) => f.name === name);
  return (family?.metrics ?? []).filter((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
}

/**
 * The value of the one sample of `name` with `labels`; a histogram's: its count (the +Inf bucket: this parser keeps
 * neither a histogram's labels nor its _count, so a histogram is looked up without labels). NaN when there is none.
 */
export function value(s: Scrape, name: string, labels: Record<string, string> = {}): number {
  const m = samples(s, name, labels)[0];
  return Number(m?.buckets?.['+Inf'] ?? m?.value ?? m?.count ?? NaN);
}
