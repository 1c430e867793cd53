/** float64 references for the norms, activations and RoPE (FlashInfer's definitions). */

export function rmsnormRef(
  x: Float64Array,
  w: Float64Array,
  rows: number,
  hidden: number,
  eps: number,
  gemma: boolean,
): Float64Array {
  const out = new Float64Array(rows * hidden);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < hidden; i++) ss += x[r * hidden + i] ** 2;
    const inv = 1 / Math.sqrt(ss / hidden + eps);
    for (let i = 0; i < hidden; i++) out[r * hidden + i] = x[r * hidden + i] * inv * (gemma ? 1 + w[i] : w[i]);
  }
  return out;
}

export function layernormRef(
  x: Float64Array,
  gamma: Float64Array,
  beta: Float64Array,
  rows: number,
  hidden: number,
  eps: number,
): Float64Array {
  const out = new Float64Array(rows * hidden);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let i = 0; i < hidden; i++) mean += x[r * hidden + i];
    mean /= hidden;
    let v = 0;
    for (let i = 0; i < hidden; i++) v += (x[r * hidden + i] - mean) ** 2;
    const inv = 1 / Math.sqrt(v / hidden + eps);
    for (let i = 0; i < hidden; i++) out[r * hidden + i] = (x[r * hidden + i] - mean) * inv * gamma[i] + beta[i];
  }
  return out;
}

export const ACTIVATIONS = {
  silu: (x: number) => x / (1 + Math.exp(-x)),
  gelu: (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2)),
  geluTanh: (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))),
};

/** erf to about 1e-15 (series for small |x|, continued fraction via erfc otherwise). */
export function erf(x: number): number {
  const a = Math.abs(x);
  if (a < 2.5) {
    let sum = a, term = a;
    for (let n = 1; n < 100; n++) {
      term *= (-a * a) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(a) by Lentz's continued fraction.
  let f = a, c = a, d = 0;
  for (let n = 1; n < 200; n++) {
    const an = n / 2;
    d = a + an * d;
    d = 1 / d;
    c = a + an / c;
    f *= c * d;
    if (Math.abs(c * d - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-a * a) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

export function actAndMulRef(x: Float64Array, rows: number, d: number, act: (v: number) => number): Float64Array {
  const out = new Float64Array(rows * d);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < d; i++) out[r * d + i] = act(x[r * 2 * d + i]) * x[r * 2 * d + d + i];
  }
  return out;
}

export interface RopeRefOptions {
  rotaryDim: number;
  interleave: boolean;
  /** cos and sin of pair j at position p. */
  angle: (pos: number, j: number) => [cos: number, sin: number];
}

/** Frequency of pair j, standard or Llama 3.1 (FlashInfer's formulas, in float64). */
export function ropeFreq(
  j: number,
  rotaryDim: number,
  scale: number,
  theta: number,
  llama31?: { low: number; high: number; oldContextLen: number },
): number {
  const base = Math.pow(1 / theta, (2 * j) / rotaryDim);
  if (!llama31) return base / scale;
  const a = llama31.oldContextLen / (2 * Math.PI * llama31.high - 2 * Math.PI * llama31.low);
  const b = -1 / (llama31.high / llama31.low - 1);
  const smooth = Math.min(1, Math.max(0, base * a + b));
  return (1 - smooth) * (base / scale) + smooth * base;
}

/** Rotates x [nnz, heads, dim] with positions pos[nnz]. */
export function ropeRef(
  x: Float64Array,
  nnz: number,
  heads: number,
  dim: number,
  pos: ArrayLike<number>,
  o: RopeRefOptions,
): Float64Array {
  const out = Float64Array.from(x);
  const half = o.rotaryDim / 2;
  for (let t = 0; t < nnz; t++) {
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * dim;
      for (let j = 0; j < half; j++) {
        const [c, s] = o.angle(pos[t], j);
        const i0 = o.interleave ? 2 * j : j, i1 = o.interleave ? 2 * j + 1 : j + half;
        const x0 = x[base + i0], x1 = x[base + i1];
        out[base + i0] = x0 * c - x1 * s;
        out[base + i1] = x1 * c + x0 * s;
      }
    }
  }
  return out;
}
