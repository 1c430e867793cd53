/** The C ABI version this TypeScript expects; the twin of FI_ABI_VERSION in flashinfer_ts.h. */
export const ABI_VERSION = 3;
