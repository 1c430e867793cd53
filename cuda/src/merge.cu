// extern "C" entry point of the state merges (cascade attention, split KV).
#include "../kernels/attention/merge.cuh"
#include "dispatch.h"

using namespace fi;
using namespace fi::attn;

extern "C" int32_t fi_merge_states(int32_t mode, uint64_t v, uint64_t s, uint64_t vb, uint64_t sb, uint64_t vo,
                                   uint64_t so, uint64_t mask, int32_t rows, int32_t num_states, int32_t heads,
                                   int32_t head_dim, int32_t dtype, uint64_t stream) {
  FI_GUARD_BEGIN
  if (rows < 0 || heads <= 0 || head_dim <= 0 || head_dim % 4 || num_states < 0 || (mode != 0 && mode != 1))
    return set_error(FI_ERR_INVALID_ARGUMENT, "merge states: mode %d rows %d states %d heads %d head_dim %d", mode,
                     rows, num_states, heads, head_dim);
  if (rows == 0) return FI_OK;
  const dim3 grid(rows, (heads + 3) / 4);
  const cudaStream_t st = as_stream(stream);
  if (mode == 0) {
    MergeArgs m{};
    m.v = as_ptr<const void>(v);
    m.s = as_ptr<const float>(s);
    m.vo = as_ptr<void>(vo);
    m.so = as_ptr<float>(so);
    m.v_si = int64_t(heads) * head_dim, m.v_sh = head_dim, m.s_si = heads, m.s_sh = 1;
    m.o_sr = int64_t(heads) * head_dim, m.o_sh = head_dim;
    m.rows = rows, m.heads = heads, m.head_dim = head_dim, m.fixed_count = num_states;
    return FI_DISPATCH_HALF(dtype, T, {
      merge_states_kernel<T, T><<<grid, 128, 0, st>>>(m);
      FI_CHECK_LAUNCH("merge_states");
      return FI_OK;
    });
  }
  PairArgs p{};
  p.va = as_ptr<const void>(v);
  p.sa = as_ptr<const float>(s);
  p.vb = as_ptr<const void>(vb);
  p.sb = as_ptr<const float>(sb);
  p.vo = as_ptr<void>(vo);
  p.so = as_ptr<float>(so);
  p.mask = as_ptr<const uint8_t>(mask);
  p.rows = rows, p.heads = heads, p.head_dim = head_dim;
  return FI_DISPATCH_HALF(dtype, T, {
    merge_pair_kernel<T><<<grid, 128, 0, st>>>(p);
    FI_CHECK_LAUNCH("merge_pair");
    return FI_OK;
  });
  FI_GUARD_END
}
