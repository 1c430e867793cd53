// Parameter blocks of the C ABI -> kernel arguments, shared by the plain decode / prefill entry points
// and the fused BatchAttention one (batch_attention.cu). Each checks what the kernels rely on and
// returns FI_OK or an error status with fi_last_error set.
#pragma once
#include "flashinfer_ts.h"
#include "../kernels/attention/decode.cuh"
#include "../kernels/prefill/prefill.cuh"

namespace fi::prefill {
// `tiles`: the grid width (work entries, or query tiles of a single request).
int32_t args_from_params(const fi_prefill_params& p, PrefillArgs& a, int& tiles);
}  // namespace fi::prefill

namespace fi::attn {
int32_t args_from_params(const fi_decode_params& p, DecodeArgs& a);
}  // namespace fi::attn
