// extern "C" entry point for every RoPE flavour: one kernel, positions and frequencies by mode.
#include <cmath>
#include <cstddef>
#include <cstring>
#include <initializer_list>

#include "../kernels/rope.cuh"
#include "dispatch.h"

using namespace fi;

namespace {

template <typename T, int V, bool IL>
int32_t launch_rope(const RopeArgs& a, cudaStream_t stream) {
  const int half = a.rotary_dim / 2;
  const int units = IL ? a.rotary_dim / V : half / V;
  // About 128 threads a block: the rotary units of one head in x, heads in parallel in y.
  const int heads = a.num_q_heads + a.num_k_heads;
  int hy = 128 / units;
  if (hy < 1) hy = 1;
  if (hy > heads) hy = heads;
  launch(rope_kernel<T, V, IL>, dim3(a.nnz), dim3(units, hy), 0, stream, a);
  FI_CHECK_LAUNCH("rope");
  return FI_OK;
}

}  // namespace

static_assert(sizeof(fi_rope_params) == 200, "fi_rope_params layout is part of the ABI");
static_assert(offsetof(fi_rope_params, strides) == 64 && offsetof(fi_rope_params, nnz) == 128 &&
                  offsetof(fi_rope_params, rope_scale) == 176,
              "fi_rope_params layout is part of the ABI");

extern "C" int32_t fi_apply_rope(const uint8_t* params, uint64_t stream) {
  FI_GUARD_BEGIN
  fi_rope_params p;
  std::memcpy(&p, params, sizeof p);
  if (p.nnz < 0 || p.rotary_dim <= 0 || p.rotary_dim % 2 || p.rotary_dim > p.head_dim)
    return set_error(FI_ERR_INVALID_ARGUMENT, "rope: nnz %d, rotary_dim %d, head_dim %d", p.nnz,
                     p.rotary_dim, p.head_dim);
  if (p.nnz == 0) return FI_OK;
  RopeArgs a{};
  a.q = as_ptr<const void>(p.q);
  a.k = as_ptr<const void>(p.k);
  a.q_out = as_ptr<void>(p.q_out);
  a.k_out = as_ptr<void>(p.k_out);
  a.indptr = as_ptr<const int>(p.indptr);
  a.offsets = as_ptr<const int>(p.offsets);
  a.pos_ids = as_ptr<const void>(p.pos_ids);
  a.cos_sin = as_ptr<const float>(p.cos_sin_cache);
  a.q_stride_n = p.strides[0];
  a.q_stride_h = p.strides[1];
  a.k_stride_n = p.strides[2];
  a.k_stride_h = p.strides[3];
  a.qo_stride_n = p.strides[4];
  a.qo_stride_h = p.strides[5];
  a.ko_stride_n = p.strides[6];
  a.ko_stride_h = p.strides[7];
  a.nnz = p.nnz;
  a.batch = p.batch;
  a.num_q_heads = p.num_q_heads;
  a.num_k_heads = p.num_k_heads;
  a.head_dim = p.head_dim;
  a.rotary_dim = p.rotary_dim;
  a.pos_mode = p.pos_mode;
  a.pos_is_i64 = p.pos_dtype == FI_I64;
  a.freq_mode = p.freq_mode;
  a.cache_rows = p.cache_rows;
  a.copy_pass_through = p.q != p.q_out || p.k != p.k_out;
  a.rope_rcp_scale = 1.f / p.rope_scale;
  a.log2_rcp_theta = -std::log2(p.rope_theta);
  a.smooth_a = p.old_context_len / (2.f * float(M_PI) * p.high_freq_factor -
                                    2.f * float(M_PI) * p.low_freq_factor);
  a.smooth_b = -1.f / (p.high_freq_factor / p.low_freq_factor - 1.f);
  const int span = p.interleave ? p.rotary_dim : p.rotary_dim / 2;
  const int vec = vector_width(2, {p.q, p.k, p.q_out, p.k_out},
                               {span, p.strides[0], p.strides[1], p.strides[2], p.strides[3],
                                p.strides[4], p.strides[5], p.strides[6], p.strides[7]});
  const cudaStream_t s = as_stream(stream);
  return FI_DISPATCH_HALF(p.dtype, T, {
    if (p.interleave) {
      // A unit must hold whole pairs, so interleaved rotation needs at least 2-element alignment.
      if (vec < 2)
        return set_error(FI_ERR_UNSUPPORTED,
                         "rope: interleaved rotation needs q, k and their strides 4-byte aligned");
      if (vec >= 8) return launch_rope<T, 8, true>(a, s);
      if (vec >= 4) return launch_rope<T, 4, true>(a, s);
      return launch_rope<T, 2, true>(a, s);
    }
    if (vec >= 8) return launch_rope<T, 8, false>(a, s);
    if (vec >= 4) return launch_rope<T, 4, false>(a, s);
    if (vec >= 2) return launch_rope<T, 2, false>(a, s);
    return launch_rope<T, 1, false>(a, s);
  });
  FI_GUARD_END
}
