/** Float64 references for attention: decode of one query row over a KV sequence, and state merging. */

export interface DecodeVariantRef {
  smScale: number;
  logitsSoftCap?: number;
  /** ALiBi slope of this q head (0 or undefined: none). */
  alibiSlope?: number;
  /** ROPE_LLAMA: rotate q at seqLen - 1 and k at its position (NeoX pairs). */
  rope?: { rcpScale: number; theta: number };
  windowLeft?: number;
  kScale?: number;
  vScale?: number;
}

/** Rotates x (length D) in place as at position pos (NeoX style: i pairs with i + D/2). */
export function ropeRotate(x: Float64Array, pos: number, rcpScale: number, theta: number): void {
  const half = x.length / 2;
  for (let i = 0; i < half; i++) {
    const freq = rcpScale * Math.pow(theta, -(2 * i) / x.length);
    const a = pos * freq, c = Math.cos(a), s = Math.sin(a);
    const x1 = x[i], x2 = x[i + half];
    x[i] = x1 * c - x2 * s;
    x[i + half] = x2 * c + x1 * s;
  }
}

/**
 * Attention of one query head q (length D) over keys/values at positions [0, seqLen): kOffset(pos) and
 * vOffset(pos) give the row's offset into kPool / vPool. Returns the output row and the base-2 LSE.
 */
export function decodeRowReference(
  q: Float64Array,
  seqLen: number,
  kPool: ArrayLike<number>,
  vPool: ArrayLike<number>,
  kOffset: (pos: number) => number,
  variant: DecodeVariantRef,
  vOffset: (pos: number) => number = kOffset,
): { out: Float64Array; lse: number } {
  const d = q.length;
  const qr = Float64Array.from(q);
  if (variant.rope) ropeRotate(qr, seqLen - 1, variant.rope.rcpScale, variant.rope.theta);
  const start = variant.windowLeft !== undefined && variant.windowLeft >= 0
    ? Math.max(0, seqLen - 1 - variant.windowLeft)
    : 0;
  const n = seqLen - start;
  const logits = new Float64Array(n);
  const kr = new Float64Array(d);
  const scale = variant.smScale * (variant.kScale ?? 1);
  let max = -Infinity;
  for (let i = 0; i < n; i++) {
    const pos = start + i, off = kOffset(pos);
    let dot = 0;
    if (variant.rope) {
      for (let j = 0; j < d; j++) kr[j] = kPool[off + j];
      ropeRotate(kr, pos, variant.rope.rcpScale, variant.rope.theta);
      for (let j = 0; j < d; j++) dot += qr[j] * kr[j];
    } else {
      for (let j = 0; j < d; j++) dot += qr[j] * kPool[off + j];
    }
    let x = dot * scale;
    const cap = variant.logitsSoftCap ?? 0;
    if (cap > 0) x = cap * Math.tanh(x / cap);
    if (variant.alibiSlope) x += variant.alibiSlope * (pos - (seqLen - 1));
    logits[i] = x;
    if (x > max) max = x;
  }
  const out = new Float64Array(d);
  if (n <= 0) return { out, lse: -Infinity };
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const p = Math.exp(logits[i] - max);
    sum += p;
    const off = vOffset(start + i);
    for (let j = 0; j < d; j++) out[j] += p * vPool[off + j];
  }
  const vs = (variant.vScale ?? 1) / sum;
  for (let j = 0; j < d; j++) out[j] *= vs;
  return { out, lse: (max + Math.log(sum)) / Math.LN2 };
}

/** Merges states (rows v_i with base-2 LSEs s_i): softmax-weighted by 2^s_i. */
export function mergeReference(vs: Float64Array[], ss: number[]): { v: Float64Array; s: number } {
  const m = Math.max(...ss);
  const v = new Float64Array(vs[0].length);
  if (m === -Infinity) return { v, s: -Infinity };
  let sum = 0;
  for (let i = 0; i < vs.length; i++) sum += 2 ** (ss[i] - m);
  for (let i = 0; i < vs.length; i++) {
    const w = 2 ** (ss[i] - m) / sum;
    for (let j = 0; j < v.length; j++) v[j] += w * vs[i][j];
  }
  return { v, s: m + Math.log2(sum) };
}
