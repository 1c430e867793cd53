/**
 * Custom attention masks, packed to bits as FlashInfer's packbits / segment_packbits do (numpy's
 * packbits with bitorder="little"): element i of a mask is bit i % 8 of byte i / 8.
 */
import { invalid } from "../runtime/errors.ts";

export type BoolArray = ArrayLike<boolean | number>;

/** Packs booleans (or 0/1 numbers) into bits, little-endian within each byte. */
export function packbits(mask: BoolArray): Uint8Array {
  const out = new Uint8Array(Math.ceil(mask.length / 8));
  for (let i = 0; i < mask.length; i++) if (mask[i]) out[i >> 3] |= 1 << (i & 7);
  return out;
}

/**
 * Packs each segment [indptr[b], indptr[b + 1]) of `mask` separately (each starts on a byte) and
 * returns the packed bytes with their byte offsets, `packedIndptr` [batch + 1].
 */
export function segmentPackbits(
  mask: BoolArray,
  indptr: ArrayLike<number>,
): { packed: Uint8Array; packedIndptr: Int32Array } {
  const op = "pack a segmented mask";
  if (indptr.length < 1 || indptr[0] !== 0) invalid(op, "indptr", "a non-empty array starting at 0", indptr[0]);
  const batch = indptr.length - 1;
  const packedIndptr = new Int32Array(batch + 1);
  for (let b = 0; b < batch; b++) {
    const len = indptr[b + 1] - indptr[b];
    if (!(len >= 0)) {
      invalid(op, "indptr", "non-decreasing", `=indptr[${b}] = ${indptr[b]}, indptr[${b + 1}] = ${indptr[b + 1]}`);
    }
    packedIndptr[b + 1] = packedIndptr[b] + Math.ceil(len / 8);
  }
  if (indptr[batch] !== mask.length) {
    invalid(op, "mask", `of length indptr[${batch}] = ${indptr[batch]}`, `=${mask.length}`);
  }
  const packed = new Uint8Array(packedIndptr[batch]);
  for (let b = 0; b < batch; b++) {
    const base = indptr[b], out = packedIndptr[b];
    for (let i = 0; i < indptr[b + 1] - base; i++) if (mask[base + i]) packed[out + (i >> 3)] |= 1 << (i & 7);
  }
  return { packed, packedIndptr };
}
