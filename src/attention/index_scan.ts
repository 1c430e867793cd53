/**
 * The page-index check that every plan runs over indices[0, n): the largest index and whether any is
 * negative. It is O(pages) on the host. Where the native library is loaded (every plan on a GPU), one
 * AVX2 pass of fi_host_index_max reads the caller's array in place; otherwise a 100-byte WebAssembly
 * SIMD kernel (one unsigned i32x4 max, about 5x faster than the best plain-JS loop, but it must copy
 * the ids into its memory first), and the JS loop where WebAssembly SIMD is unavailable.
 */
import { loadedNative } from "../runtime/library.ts";

export interface IndexScan {
  /** The largest index, or -1 when n is 0. */
  max: number;
  negative: boolean;
}

/** Plain JS, unrolled by 4. */
export function scanIndicesJs(a: Int32Array, n: number): IndexScan {
  let mx = -1, or = 0, i = 0;
  for (; i + 4 <= n; i += 4) {
    const x = a[i], y = a[i + 1], z = a[i + 2], w = a[i + 3];
    or |= x | y | z | w;
    mx = Math.max(mx, x, y, z, w);
  }
  for (; i < n; i++) {
    or |= a[i];
    mx = Math.max(mx, a[i]);
  }
  return { max: mx, negative: or < 0 };
}

function leb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
}

function section(id: number, body: number[]): number[] {
  return [id, ...leb(body.length), ...body];
}

/**
 * (func (export "scan") (param $n i32)) over i32s at byte 32 of the exported memory ($n a multiple of
 * 16): stores the i32x4 lane maxima, compared unsigned (from 0), at byte 0. Unsigned, a negative index
 * is larger than any valid one, so one max finds both faults. Four loads per iteration.
 */
// deno-fmt-ignore
const CODE = [
  0x02, 0x02, 0x7f, 0x01, 0x7b, // locals: p, end (i32); mx (v128)
  0x20, 0x00, 0x41, 0x02, 0x74, 0x41, 0x20, 0x6a, 0x21, 0x02, // end = n * 4 + 32
  0x41, 0x20, 0x21, 0x01, // p = 32
  0x41, 0x00, 0xfd, 0x11, 0x21, 0x03, // mx = i32x4.splat(0)
  0x02, 0x40, 0x03, 0x40, // block, loop
  0x20, 0x01, 0x20, 0x02, 0x4f, 0x0d, 0x01, // br_if (p >= end) out
  0x20, 0x03, // mx
  0x20, 0x01, 0xfd, 0x00, 0x04, 0x00, 0x20, 0x01, 0xfd, 0x00, 0x04, 0x10, 0xfd, 0xb9, 0x01, // max_u(p[0], p[16])
  0x20, 0x01, 0xfd, 0x00, 0x04, 0x20, 0x20, 0x01, 0xfd, 0x00, 0x04, 0x30, 0xfd, 0xb9, 0x01, // max_u(p[32], p[48])
  0xfd, 0xb9, 0x01, 0xfd, 0xb9, 0x01, 0x21, 0x03, // mx = max_u(mx, both)
  0x20, 0x01, 0x41, 0xc0, 0x00, 0x6a, 0x21, 0x01, // p += 64
  0x0c, 0x00, 0x0b, 0x0b, // br loop; end; end
  0x41, 0x00, 0x20, 0x03, 0xfd, 0x0b, 0x04, 0x00, // v128.store 0 mx
  0x0b,
];

interface Kernel {
  memory: WebAssembly.Memory;
  scan: (n: number) => void;
  view: Int32Array;
}

let kernel: Kernel | null | undefined;

function load(): Kernel | null {
  try {
    // deno-fmt-ignore
    const bytes = new Uint8Array([
      0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
      ...section(1, [0x01, 0x60, 0x01, 0x7f, 0x00]), // type: (i32) -> ()
      ...section(3, [0x01, 0x00]), // one function of type 0
      ...section(5, [0x01, 0x00, 0x01]), // one memory, 1 page
      ...section(7, [0x02, 0x03, 0x6d, 0x65, 0x6d, 0x02, 0x00, 0x04, 0x73, 0x63, 0x61, 0x6e, 0x00, 0x00]), // "mem", "scan"
      ...section(10, [0x01, ...leb(CODE.length), ...CODE]),
    ]);
    const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes));
    const memory = inst.exports.mem as WebAssembly.Memory;
    return { memory, scan: inst.exports.scan as (n: number) => void, view: new Int32Array(memory.buffer) };
  } catch {
    return null; // no WebAssembly SIMD here
  }
}

const maxOut = new BigInt64Array(1);

/** The unsigned maximum of a[0, n) by the native library (copied into dst on the way), or undefined when it is not loaded. */
function nativeMax(a: Int32Array, n: number, dst: Int32Array | null = null): number | undefined {
  const lib = loadedNative();
  if (!lib || lib.fi_host_index_max(a, n, dst, maxOut) !== 0) return undefined;
  return Number(maxOut[0]);
}

/** Whether scanning indices[0, n) while staging them (stageIndices) is one native pass here. */
export function canStageIndices(n: number): boolean {
  return n >= 4096 && loadedNative() !== undefined;
}

/**
 * Copies ids[0, n) into dst (a plan's staging buffer) and scans them in the same native pass; where that
 * is not available (canStageIndices false), a copy then scanIndices.
 */
export function stageIndices(ids: Int32Array, n: number, dst: Int32Array): IndexScan {
  if (dst.length < n || ids.length < n) throw new RangeError(`stageIndices: ${n} ids into ${dst.length} slots`);
  const umax = n >= 4096 ? nativeMax(ids, n, dst) : undefined;
  if (umax === undefined) {
    dst.set(n === ids.length ? ids : ids.subarray(0, n));
    return scanIndices(ids, n);
  }
  return umax >= 0x80000000 ? scanIndicesJs(ids, n) : { max: umax, negative: false };
}

/** The largest of indices[0, n) and whether any is negative. */
export function scanIndices(a: Int32Array, n: number): IndexScan {
  if (n < 4096) return scanIndicesJs(a, n);
  const umax = nativeMax(a, n);
  if (umax !== undefined) return umax >= 0x80000000 ? scanIndicesJs(a, n) : { max: umax, negative: false };
  return scanIndicesWasm(a, n);
}

/** The WebAssembly SIMD scan (the JS loop where WebAssembly SIMD is unavailable). */
export function scanIndicesWasm(a: Int32Array, n: number): IndexScan {
  if (n === 0) return { max: -1, negative: false };
  if (kernel === undefined) kernel = load();
  if (!kernel) return scanIndicesJs(a, n);
  const padded = (n + 15) & ~15;
  const need = 32 + padded * 4;
  if (kernel.memory.buffer.byteLength < need) {
    kernel.memory.grow(Math.ceil((need - kernel.memory.buffer.byteLength) / 65536));
    kernel.view = new Int32Array(kernel.memory.buffer);
  }
  const v = kernel.view;
  v.set(n === a.length ? a : a.subarray(0, n), 8);
  for (let i = n; i < padded; i++) v[8 + i] = 0; // zeros change no unsigned max
  kernel.scan(padded);
  const mx = Math.max(v[0] >>> 0, v[1] >>> 0, v[2] >>> 0, v[3] >>> 0);
  // A negative index is an error the caller reports: the exact signed maximum then comes from the JS loop.
  return mx >= 0x80000000 ? scanIndicesJs(a, n) : { max: mx, negative: false };
}
