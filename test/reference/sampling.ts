/** Float64 references for the samplers: admissible sets, filtered distributions, renorm, mask, softmax, Philox. */

export interface FilterSpec {
  topK?: number;
  topP?: number;
  minP?: number;
  order?: "top_k_first" | "joint";
}

/** For each token: the mass and count of strictly larger weights (one sort, for the reference only). */
function larger(w: ArrayLike<number>): { count: Float64Array; mass: Float64Array } {
  const n = w.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => w[b] - w[a]);
  const count = new Float64Array(n), mass = new Float64Array(n);
  let i = 0, c = 0, s = 0;
  while (i < n) {
    let j = i;
    let tie = 0;
    while (j < n && w[order[j]] === w[order[i]]) tie += w[order[j++]];
    for (let q = i; q < j; q++) count[order[q]] = c, mass[order[q]] = s;
    c += j - i, s += tie, i = j;
  }
  return { count, mass };
}

/**
 * The admissible mask. `slack` widens top-p's boundary test by that fraction of the total, and the
 * result says which tokens are ambiguous under it (f32 sums may round either way there).
 */
export function admissible(
  w: ArrayLike<number>,
  f: FilterSpec,
  slack = 0,
): { keep: Uint8Array; ambiguous: Uint8Array } {
  const n = w.length;
  let total = 0, max = 0;
  for (let i = 0; i < n; i++) total += w[i], max = Math.max(max, w[i]);
  const { count, mass } = larger(w);
  const keep = new Uint8Array(n), amb = new Uint8Array(n);
  let zk = total;
  if (f.topK !== undefined && f.topP !== undefined && (f.order ?? "top_k_first") === "top_k_first") {
    zk = 0;
    for (let i = 0; i < n; i++) if (w[i] > 0 && count[i] < f.topK) zk += w[i];
  }
  for (let i = 0; i < n; i++) {
    if (!(w[i] > 0)) continue;
    let ok = true, edge = false;
    if (f.topK !== undefined) ok &&= count[i] < f.topK;
    if (f.topP !== undefined) {
      const lim = f.topP * zk;
      ok &&= mass[i] < lim;
      edge = Math.abs(mass[i] - lim) <= slack * total;
    }
    if (f.minP !== undefined) {
      ok &&= w[i] >= f.minP * max;
      edge ||= Math.abs(w[i] - f.minP * max) <= 1e-6 * max;
    }
    keep[i] = ok ? 1 : 0;
    amb[i] = edge ? 1 : 0;
  }
  return { keep, ambiguous: amb };
}

/** The filtered, renormalized distribution. */
export function filtered(w: ArrayLike<number>, f: FilterSpec): Float64Array {
  const { keep } = admissible(w, f);
  const out = new Float64Array(w.length);
  let z = 0;
  for (let i = 0; i < w.length; i++) if (keep[i]) z += w[i];
  for (let i = 0; i < w.length; i++) out[i] = keep[i] ? w[i] / z : 0;
  return out;
}

export function softmaxRef(x: ArrayLike<number>, temperature = 1): Float64Array {
  let m = -Infinity;
  for (let i = 0; i < x.length; i++) m = Math.max(m, x[i]);
  const out = new Float64Array(x.length);
  let s = 0;
  for (let i = 0; i < x.length; i++) s += out[i] = Math.exp((x[i] - m) / temperature);
  for (let i = 0; i < x.length; i++) out[i] /= s;
  return out;
}

export function maskRef(x: ArrayLike<number>, k: number): Float64Array {
  const { keep } = admissible(softmaxRef(x), { topK: k });
  return Float64Array.from(x, (v, i) => (keep[i] ? v : -Infinity));
}

/** Cosine similarity of two vectors. */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) ab += a[i] * b[i], aa += a[i] * a[i], bb += b[i] * b[i];
  return ab / Math.sqrt(aa * bb);
}

function mulhilo(a: number, b: number): [number, number] {
  const p = BigInt(a >>> 0) * BigInt(b >>> 0);
  return [Number(p >> 32n) >>> 0, Number(p & 0xffffffffn) >>> 0];
}

/** Philox 4x32-10, as cuda/kernels/sampling/philox.cuh. */
export function philox4x32_10(ctr: readonly number[], key: readonly number[]): number[] {
  let [c0, c1, c2, c3] = ctr.map((v) => v >>> 0);
  let [k0, k1] = key.map((v) => v >>> 0);
  for (let r = 0; r < 10; r++) {
    const [hi0, lo0] = mulhilo(0xd2511f53, c0);
    const [hi1, lo1] = mulhilo(0xcd9e8d57, c2);
    [c0, c1, c2, c3] = [(hi1 ^ c1 ^ k0) >>> 0, lo1, (hi0 ^ c3 ^ k1) >>> 0, lo0];
    k0 = (k0 + 0x9e3779b9) >>> 0;
    k1 = (k1 + 0xbb67ae85) >>> 0;
  }
  return [c0, c1, c2, c3];
}
