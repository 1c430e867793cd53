/** Error codes: the first five mirror the C ABI's status codes (cuda/include/flashinfer_ts.h). */
export type ErrorCode =
  | "INVALID_ARGUMENT"
  | "CUDA"
  | "UNSUPPORTED"
  | "NO_GPU"
  | "LIBRARY_NOT_FOUND"
  | "ABI_MISMATCH"
  | "DISPOSED"
  | "BUILD_FAILED";

const STATUS_CODES: Record<number, ErrorCode> = {
  1: "INVALID_ARGUMENT",
  2: "CUDA",
  3: "UNSUPPORTED",
  4: "NO_GPU",
};

/** The one error class of flashinfer-ts; `code` says what kind of failure it is. */
export class FlashInferError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "FlashInferError";
    this.code = code;
  }
}

/** The code of a native status; unknown statuses count as CUDA failures. */
export function codeOfStatus(status: number): ErrorCode {
  return STATUS_CODES[status] ?? "CUDA";
}

/** Renders a value for an error message: arrays and shapes as [a, b], strings quoted. */
export function show(value: unknown): string {
  if (typeof value === "string") return `"${value}"`;
  if (typeof value === "bigint") return `${value}n`;
  if (Array.isArray(value)) return `[${value.map(show).join(", ")}]`;
  if (value === null || value === undefined) return String(value);
  if (typeof value === "object") {
    const name = (value as { constructor?: { name?: string } }).constructor?.name;
    return name && name !== "Object" ? name : "an object";
  }
  return String(value);
}

/**
 * Throws the standard argument error:
 * `Cannot plan decode as 'numQoHeads' must be a multiple of 'numKvHeads': received 30 and 8`.
 */
export function invalid(op: string, arg: string, expected: string, received: unknown): never {
  throw new FlashInferError(
    "INVALID_ARGUMENT",
    `Cannot ${op} as '${arg}' must be ${expected}: received ${
      typeof received === "string" && received.startsWith("=") ? received.slice(1) : show(received)
    }`,
  );
}
