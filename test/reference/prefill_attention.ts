/**
 * Float64 attention for one request, with FlashInfer's prefill semantics (causal bottom-right,
 * sliding window, soft cap, ALiBi, custom mask) and LSE in base 2. Inputs are dense and NHD:
 * q [qoLen][Hq][Dqk], k [kvLen][Hkv][Dqk], v [kvLen][Hkv][Dvo]. Only the listed rows are computed.
 */
import { alibiSlopes } from "../../src/attention/variants.ts";

export interface AttentionRefOptions {
  causal?: boolean;
  windowLeft?: number;
  logitsSoftCap?: number;
  smScale?: number;
  alibi?: boolean;
  /** mask(i, j): may query row i see key j (the custom mask; replaces causal). */
  mask?: (i: number, j: number) => boolean;
}

export interface AttentionRefResult {
  /** out[(row * Hq + h) * Dvo + d], computed rows only (others NaN). */
  out: Float64Array;
  /** lse[row * Hq + h] in base 2, -Infinity for a row that sees nothing. */
  lse: Float64Array;
}

export function attentionRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  qoLen: number,
  kvLen: number,
  hq: number,
  hkv: number,
  dqk: number,
  dvo: number,
  o: AttentionRefOptions,
  rows?: readonly number[],
): AttentionRefResult {
  const out = new Float64Array(qoLen * hq * dvo).fill(NaN);
  const lse = new Float64Array(qoLen * hq).fill(NaN);
  const scale = o.smScale ?? 1 / Math.sqrt(dqk);
  const slopes = o.alibi ? alibiSlopes(hq) : undefined;
  const window = o.windowLeft ?? -1, cap = o.logitsSoftCap ?? 0;
  const delta = kvLen - qoLen, group = hq / hkv;
  const logits = new Float64Array(kvLen);
  for (const i of rows ?? Array.from({ length: qoLen }, (_, r) => r)) {
    const pos = i + delta;
    for (let h = 0; h < hq; h++) {
      const kh = Math.floor(h / group);
      let mx = -Infinity;
      for (let j = 0; j < kvLen; j++) {
        let keep = true;
        if (o.mask) keep = o.mask(i, j);
        else if (o.causal) keep = j <= pos;
        if (window >= 0 && j < pos - window) keep = false;
        if (!keep) {
          logits[j] = -Infinity;
          continue;
        }
        let s = 0;
        const qb = (i * hq + h) * dqk, kb = (j * hkv + kh) * dqk;
        for (let d = 0; d < dqk; d++) s += q[qb + d] * k[kb + d];
        s *= scale;
        if (cap > 0) s = cap * Math.tanh(s / cap);
        if (slopes) s += slopes[h] * (j - pos);
        logits[j] = s;
        if (s > mx) mx = s;
      }
      const ob = (i * hq + h) * dvo;
      for (let d = 0; d < dvo; d++) out[ob + d] = 0;
      if (mx === -Infinity) {
        lse[i * hq + h] = -Infinity;
        continue;
      }
      let sum = 0;
      for (let j = 0; j < kvLen; j++) {
        if (logits[j] === -Infinity) continue;
        const p = Math.exp(logits[j] - mx);
        sum += p;
        const vb = (j * hkv + kh) * dvo;
        for (let d = 0; d < dvo; d++) out[ob + d] += p * v[vb + d];
      }
      for (let d = 0; d < dvo; d++) out[ob + d] /= sum;
      lse[i * hq + h] = (mx + Math.log(sum)) / Math.LN2;
    }
  }
  return { out, lse };
}
