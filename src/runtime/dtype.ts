/**
 * Element types and their host codecs. Codes match `enum fi_dtype` in the C ABI.
 * Floating encoders round to nearest, ties to even, straight from float64 (no double rounding).
 * fp8 encoders saturate finite overflow to the largest finite value, like CUDA's __NV_SATFINITE.
 */
export type DType = "f32" | "f16" | "bf16" | "e4m3" | "e5m2" | "i32" | "i64" | "u8";

export const DTYPES: readonly DType[] = ["f32", "f16", "bf16", "e4m3", "e5m2", "i32", "i64", "u8"];

export const DTYPE_CODE: Readonly<Record<DType, number>> = {
  f32: 0,
  f16: 1,
  bf16: 2,
  e4m3: 3,
  e5m2: 4,
  i32: 5,
  i64: 6,
  u8: 7,
};

export const DTYPE_BYTES: Readonly<Record<DType, number>> = {
  f32: 4,
  f16: 2,
  bf16: 2,
  e4m3: 1,
  e5m2: 1,
  i32: 4,
  i64: 8,
  u8: 1,
};

export function isDType(value: unknown): value is DType {
  return typeof value === "string" && (DTYPES as readonly string[]).includes(value);
}

/** The raw host array type that holds a dtype's bits. */
export type RawArray = Float32Array | Uint16Array | Uint8Array | Int32Array | BigInt64Array;

/** A small binary float format: exponent and mantissa widths and how it spends its top codes. */
interface MiniFloat {
  readonly exp: number;
  readonly man: number;
  /** IEEE-style: the all-ones exponent means inf/NaN. Otherwise (e4m3 "fn") only S.1111.111 is NaN. */
  readonly ieee: boolean;
  /** Finite overflow saturates to the largest finite value instead of becoming infinity. */
  readonly saturate: boolean;
}

const FORMATS = {
  f16: { exp: 5, man: 10, ieee: true, saturate: false },
  bf16: { exp: 8, man: 7, ieee: true, saturate: false },
  e4m3: { exp: 4, man: 3, ieee: false, saturate: true },
  e5m2: { exp: 5, man: 2, ieee: true, saturate: true },
} as const satisfies Record<string, MiniFloat>;

type MiniFloatName = keyof typeof FORMATS;

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  // Math.round rounds .5 up; move exact ties to the even neighbour.
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function maxCode(f: MiniFloat): number {
  const expField = f.ieee ? (1 << f.exp) - 2 : (1 << f.exp) - 1;
  const manField = f.ieee ? (1 << f.man) - 1 : (1 << f.man) - 2;
  return (expField << f.man) | manField;
}

function nanCode(f: MiniFloat): number {
  return f.ieee ? (((1 << f.exp) - 1) << f.man) | (1 << (f.man - 1)) : (1 << (f.exp + f.man)) - 1;
}

const maxFiniteCache = new Map<MiniFloatName, number>();
function maxFiniteOf(format: MiniFloatName): number {
  let m = maxFiniteCache.get(format);
  if (m === undefined) maxFiniteCache.set(format, m = decodeMiniFloat(format, maxCode(FORMATS[format])));
  return m;
}

/** Encodes one float64 into the bits of a small float format. */
export function encodeMiniFloat(format: MiniFloatName, x: number): number {
  const f: MiniFloat = FORMATS[format];
  const signBit = 1 << (f.exp + f.man);
  if (Number.isNaN(x)) return nanCode(f);
  const sign = x < 0 || Object.is(x, -0) ? signBit : 0;
  let a = Math.abs(x);
  const bias = (1 << (f.exp - 1)) - 1;
  const maxFinite = maxFiniteOf(format);
  if (a === Infinity) {
    if (f.ieee && !f.saturate) return sign | (((1 << f.exp) - 1) << f.man);
    return sign | (f.ieee ? ((1 << f.exp) - 1) << f.man : maxCode(f));
  }
  if (a === 0) return sign;
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e -= 1; // log2 can be one off near powers of two
  if (2 ** (e + 1) <= a) e += 1;
  let code: number;
  if (e < 1 - bias) {
    // Subnormal: a multiple of the smallest step; a carry into 2^man lands on the smallest normal.
    code = roundHalfEven(a / 2 ** (1 - bias - f.man));
  } else {
    let q = roundHalfEven(a / 2 ** (e - f.man));
    if (q === 2 ** (f.man + 1)) {
      q = 2 ** f.man;
      e += 1;
    }
    code = ((e + bias) << f.man) | (q - 2 ** f.man);
    a = decodeMiniFloat(format, code);
  }
  if (code > maxCode(f) || a > maxFinite) {
    if (f.saturate) return sign | maxCode(f);
    return sign | (((1 << f.exp) - 1) << f.man); // infinity
  }
  return sign | code;
}

/** Decodes the bits of a small float format into a float64. */
export function decodeMiniFloat(format: MiniFloatName, bits: number): number {
  const f: MiniFloat = FORMATS[format];
  const bias = (1 << (f.exp - 1)) - 1;
  const sign = bits & (1 << (f.exp + f.man)) ? -1 : 1;
  const expField = (bits >> f.man) & ((1 << f.exp) - 1);
  const manField = bits & ((1 << f.man) - 1);
  if (f.ieee && expField === (1 << f.exp) - 1) return manField ? NaN : sign * Infinity;
  if (!f.ieee && expField === (1 << f.exp) - 1 && manField === (1 << f.man) - 1) return NaN;
  if (expField === 0) return sign * manField * 2 ** (1 - bias - f.man);
  return sign * (1 + manField / 2 ** f.man) * 2 ** (expField - bias);
}

/** Encodes numbers into the raw host array of a dtype. */
export function encode(dtype: DType, values: ArrayLike<number>): RawArray {
  const n = values.length;
  switch (dtype) {
    case "f32":
      return Float32Array.from(values as ArrayLike<number>);
    case "i32":
      return Int32Array.from(values as ArrayLike<number>);
    case "i64": {
      const out = new BigInt64Array(n);
      for (let i = 0; i < n; i++) out[i] = BigInt(Math.trunc(values[i]));
      return out;
    }
    case "u8":
      return Uint8Array.from(values as ArrayLike<number>);
    case "f16":
    case "bf16": {
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) out[i] = encodeMiniFloat(dtype, values[i]);
      return out;
    }
    case "e4m3":
    case "e5m2": {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = encodeMiniFloat(dtype, values[i]);
      return out;
    }
  }
}

/** Decodes a dtype's raw host array into float64 numbers. */
export function decode(dtype: DType, raw: RawArray): Float64Array {
  const n = raw.length;
  const out = new Float64Array(n);
  if (dtype === "f16" || dtype === "bf16" || dtype === "e4m3" || dtype === "e5m2") {
    const table = decodeTable(dtype);
    for (let i = 0; i < n; i++) out[i] = table[(raw as Uint16Array | Uint8Array)[i]];
  } else {
    for (let i = 0; i < n; i++) out[i] = Number(raw[i]);
  }
  return out;
}

const tables = new Map<MiniFloatName, Float64Array>();
function decodeTable(format: MiniFloatName): Float64Array {
  let t = tables.get(format);
  if (!t) {
    const f = FORMATS[format];
    t = new Float64Array(1 << (1 + f.exp + f.man));
    for (let b = 0; b < t.length; b++) t[b] = decodeMiniFloat(format, b);
    tables.set(format, t);
  }
  return t;
}

/** Rounds float64 values to what a dtype can hold (what the GPU will see), as float64. */
export function roundTo(dtype: DType, values: ArrayLike<number>): Float64Array {
  return decode(dtype, encode(dtype, values));
}

/** A raw host array of `n` elements of a dtype, viewing `bytes` when given. */
export function rawArray(dtype: DType, n: number, bytes?: ArrayBuffer, byteOffset = 0): RawArray {
  const buf = bytes ?? new ArrayBuffer(n * DTYPE_BYTES[dtype]);
  switch (dtype) {
    case "f32":
      return new Float32Array(buf, byteOffset, n);
    case "f16":
    case "bf16":
      return new Uint16Array(buf, byteOffset, n);
    case "i32":
      return new Int32Array(buf, byteOffset, n);
    case "i64":
      return new BigInt64Array(buf, byteOffset, n);
    default:
      return new Uint8Array(buf, byteOffset, n);
  }
}
