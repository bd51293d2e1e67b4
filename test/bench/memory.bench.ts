// The memory estimate (shared/memory.ts) against peaks the trainer measured on a GPU
// (test/bench/gpu/: memory_calibrate.py and gpu_bench.py runs on an H200). No GPU needed
// to run this: it reads the recorded measurements.
//
//   npm run bench:memory
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { GiB, estimateMemory, shapeFromConfig, type EstimateInput, type ModelShape } from '../../shared';
import { recordResult } from './results';

const DIR = join(resolve(__dirname, '..', '..', '..'), 'test', 'bench', 'gpu');

interface Row {
  label: string;
  note: string;
  input: Omit<EstimateInput, 'shape'> & { shape: ModelShape };
  allocated: number;
  reserved: number | null;
}

function main(): void {
  const cal = JSON.parse(readFileSync(join(DIR, 'h200-memory-calibration.json'), 'utf8')) as {
    device: string;
    rows: {
      shape: string;
      model: Record<string, unknown>;
      method: EstimateInput['method'];
      micro_batch_size: number;
      seq_len: number;
      gradient_checkpointing: boolean;
      optimizer: EstimateInput['optimizer'];
      /** absent in rows measured before the chunked loss existed: they ran the plain loss */
      chunked_loss?: boolean;
      lora_r: number;
      peak_allocated: number;
      peak_reserved: number;
    }[];
  };
  // 2026-12-04: the recipe as it is now (autocast, compiled layers, FlexAttention for packed blocks), each plain-loss
  // row beside its chunked-loss twin (a run cut short by its time limit: the rows it finished)
  const now = JSON.parse(readFileSync(join(DIR, 'h200-memory-calibration-2026-12-04.json'), 'utf8')) as typeof cal;
  const calRow = (r: (typeof cal.rows)[number], note: string): Row => ({
    label: r.shape,
    note,
    input: {
      shape: shapeFromConfig(r.model) as ModelShape,
      method: r.method,
      device: 'cuda',
      precision: 'bf16',
      microBatch: r.micro_batch_size,
      seqLen: r.seq_len,
      gradientCheckpointing: r.gradient_checkpointing,
      optimizer: r.optimizer,
      loraRank: r.lora_r,
      chunkedLoss: r.chunked_loss ?? false,
    },
    allocated: r.peak_allocated,
    reserved: r.peak_reserved,
  });
  const rows: Row[] = [
    ...cal.rows.map((r) =>
      calRow(r, ['lora', 'qlora'].includes(r.method) && !r.gradient_checkpointing ? 'before autocast' : ''),
    ),
    ...now.rows.map((r) => calRow(r, `2026-12-04, ${r.chunked_loss ? 'chunked' : 'plain'} loss`)),
  ];
  // the current recipe (autocast), from the GPU benchmark's third run
  const bench = JSON.parse(readFileSync(join(DIR, 'h200-gpu-bench-3-autocast.json'), 'utf8')) as {
    micro: number;
    seq: number;
    rows: Record<string, { peak_memory: number }>;
  };
  const big = cal.rows.find((r) => r.shape === 'llama-1.1b');
  if (big) {
    for (const [name, method] of [
      ['tunefleet lora', 'lora'],
      ['tunefleet qlora', 'qlora'],
    ] as const) {
      const peak = bench.rows[name]?.peak_memory;
      if (peak)
        rows.push({
          label: 'llama-1.1b',
          note: 'current recipe (GPU bench run 3)',
          input: {
            shape: shapeFromConfig(big.model) as ModelShape,
            method,
            device: 'cuda',
            precision: 'bf16',
            microBatch: bench.micro,
            seqLen: bench.seq,
            gradientCheckpointing: false,
            optimizer: 'adamw',
            loraRank: 16,
          },
          allocated: peak,
          reserved: null,
        });
    }
  }
  // the GPU benchmark of 2026-12-04 (1.1B, 8 × 1,024): defaults, the plain loss, and not compiled
  const bench4 = JSON.parse(readFileSync(join(DIR, 'h200-gpu-bench-4-2026-12-04.json'), 'utf8')) as typeof bench;
  if (big) {
    for (const [name, chunkedLoss] of [
      ['tunefleet lora', true],
      ['tunefleet lora, plain loss', false],
      ['tunefleet lora, eager', true],
    ] as const) {
      const peak = bench4.rows[name]?.peak_memory;
      if (peak)
        rows.push({
          label: 'llama-1.1b',
          note: `GPU bench 2026-12-04: ${name.replace('tunefleet lora', 'defaults').replace('defaults, ', '')}`,
          input: {
            shape: shapeFromConfig(big.model) as ModelShape,
            method: 'lora',
            device: 'cuda',
            precision: 'bf16',
            microBatch: bench4.micro,
            seqLen: bench4.seq,
            gradientCheckpointing: false,
            optimizer: 'adamw',
            loraRank: 16,
            chunkedLoss,
          },
          allocated: peak,
          reserved: null,
        });
    }
  }
  const g = (b: number | null): string => (b === null ? '-' : (b / GiB).toFixed(2));
  const lines = rows.map((r) => {
    const e = estimateMemory(r.input);
    const peakPart = e.total - e.breakdown.overhead; // what the allocator counts
    const ratio = peakPart / r.allocated;
    const pre = r.note === 'before autocast';
    return {
      text: `| ${r.label} | ${r.input.method} | ${r.input.microBatch} × ${r.input.seqLen} | ${r.input.gradientCheckpointing ? 'yes' : 'no'} | ${r.input.optimizer} | ${g(r.allocated)} | ${g(r.reserved)} | ${g(peakPart)} | ${g(e.total)} | ${ratio.toFixed(2)} | ${r.note || '-'} |`,
      ratio,
      current: !pre,
      covers: !pre && e.total >= (r.reserved ?? r.allocated),
    };
  });
  const current = lines.filter((l) => l.current);
  const table = `### Memory estimate vs measured peak, ${new Date().toISOString().slice(0, 10)} — measurements from ${cal.device} (test/bench/gpu/)

Estimate = shared/memory.ts for the same model shape and settings; "peak part" leaves out the reservation's overhead (CUDA context, fragmentation), so it compares with what \`torch.cuda.max_memory_allocated\` counts; "reservation" is what placement books. Rows marked "before autocast" were measured before the recipe ran its forward under autocast (their fp32 LoRA inputs made them larger than the current recipe's).

| model | method | micro × seq | grad ckpt | optimizer | measured peak GiB | measured reserved GiB | estimate peak part GiB | reservation GiB | estimate / measured | note |
|---|---|---|---|---|---|---|---|---|---|---|
${lines.map((l) => l.text).join('\n')}

Current-recipe rows: estimate / measured from ${Math.min(...current.map((l) => l.ratio)).toFixed(2)} to ${Math.max(...current.map((l) => l.ratio)).toFixed(2)}; the reservation covers the allocator's measured reservation (or the peak where only that was measured) in ${lines.filter((l) => l.covers).length} of ${current.length}.`;
  console.log(table);
  recordResult(table);
}

main();
