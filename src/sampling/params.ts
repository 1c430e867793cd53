/** Writes fi_sampling_params (cuda/include/flashinfer_ts.h): 30 fields of 8 bytes, in order. */

export const SamplingOp = { sample: 0, renorm: 1, mask: 2, softmax: 3 } as const;
export const Filter = { topK: 1, topP: 2, minP: 4, topKFirst: 8 } as const;

export interface SamplingParams {
  input: bigint;
  output: bigint;
  valid?: bigint;
  indices?: bigint;
  topKArr?: bigint;
  topPArr?: bigint;
  minPArr?: bigint;
  temperatureArr?: bigint;
  seedPtr?: bigint;
  offsetPtr?: bigint;
  debugRounds?: bigint;
  debugTrace?: bigint;
  inStride: number;
  outStride: number;
  batch: number;
  d: number;
  rowsIn: number;
  op: number;
  filter: number;
  inputLogits: boolean;
  indicesDtype: number;
  topK: number;
  topP: number;
  minP: number;
  temperature: number;
  seed: bigint;
  offset: bigint;
  offsetStep: bigint;
  cluster: number;
}

export const SAMPLING_PARAMS_BYTES = 240;

const buffer = new ArrayBuffer(SAMPLING_PARAMS_BYTES);
const view = new DataView(buffer);
const bytes = new Uint8Array(buffer);

/** The bytes to pass to fi_sampling_run (one shared buffer: valid until the next call). */
export function encodeSamplingParams(p: SamplingParams): Uint8Array {
  let o = 0;
  const u64 = (v: bigint | undefined) => (view.setBigUint64(o, BigInt.asUintN(64, v ?? 0n), true), o += 8);
  const i64 = (v: number) => (view.setBigInt64(o, BigInt(Math.trunc(v)), true), o += 8);
  const f64 = (v: number) => (view.setFloat64(o, v, true), o += 8);
  u64(p.input), u64(p.output), u64(p.valid), u64(p.indices), u64(p.topKArr), u64(p.topPArr), u64(p.minPArr);
  u64(p.temperatureArr), u64(p.seedPtr), u64(p.offsetPtr), u64(p.debugRounds);
  i64(p.inStride), i64(p.outStride), i64(p.batch), i64(p.d), i64(p.rowsIn), i64(p.op), i64(p.filter);
  i64(p.inputLogits ? 1 : 0), i64(p.indicesDtype), i64(p.topK);
  f64(p.topP), f64(p.minP), f64(p.temperature);
  u64(p.seed), u64(p.offset), u64(p.offsetStep);
  i64(0); // list_cap: set by the library
  i64(p.cluster);
  u64(p.debugTrace);
  if (o !== SAMPLING_PARAMS_BYTES) throw new Error(`fi_sampling_params layout: wrote ${o} bytes`);
  return bytes;
}
