// extern "C" entry points of the paged KV cache ops.
#include "../kernels/attention/page.cuh"
#include "dispatch.h"

using namespace fi;
using namespace fi::attn;

extern "C" {

int32_t fi_append_paged_kv_cache(uint64_t key, uint64_t value, int64_t key_stride_n, int64_t key_stride_h,
                                 int64_t value_stride_n, int64_t value_stride_h, uint64_t k_cache, uint64_t v_cache,
                                 int64_t stride_page, int64_t stride_slot, int64_t stride_head,
                                 uint64_t batch_indices, uint64_t positions, uint64_t indices, uint64_t indptr,
                                 int32_t nnz, int32_t num_kv_heads, int32_t head_dim, int32_t elem_bytes,
                                 int32_t page_size, int32_t num_pages, uint64_t stream) {
  FI_GUARD_BEGIN
  const int row_bytes = head_dim * elem_bytes;
  if (nnz < 0 || num_kv_heads <= 0 || row_bytes % 16 || page_size <= 0)
    return set_error(FI_ERR_INVALID_ARGUMENT, "append paged kv: nnz %d heads %d row bytes %d page size %d", nnz,
                     num_kv_heads, row_bytes, page_size);
  if (nnz == 0) return FI_OK;
  AppendArgs a{};
  a.key = as_ptr<const uint8_t>(key);
  a.value = as_ptr<const uint8_t>(value);
  a.k_cache = as_ptr<uint8_t>(k_cache);
  a.v_cache = as_ptr<uint8_t>(v_cache);
  a.batch_indices = as_ptr<const int>(batch_indices);
  a.positions = as_ptr<const int>(positions);
  a.indices = as_ptr<const int>(indices);
  a.indptr = as_ptr<const int>(indptr);
  a.key_sn = key_stride_n * elem_bytes, a.key_sh = key_stride_h * elem_bytes;
  a.value_sn = value_stride_n * elem_bytes, a.value_sh = value_stride_h * elem_bytes;
  a.sp = stride_page * elem_bytes, a.ss = stride_slot * elem_bytes, a.sh = stride_head * elem_bytes;
  a.nnz = nnz, a.heads = num_kv_heads, a.row_bytes = row_bytes, a.page_size = page_size, a.num_pages = num_pages;
  const int threads = min(256, ((num_kv_heads * row_bytes / 16 + 31) / 32) * 32);
  append_paged_kv_kernel<<<nnz, threads, 0, as_stream(stream)>>>(a);
  FI_CHECK_LAUNCH("append_paged_kv_cache");
  return FI_OK;
  FI_GUARD_END
}

int32_t fi_get_batch_indices_positions(uint64_t append_indptr, uint64_t seq_lens, uint64_t batch_indices,
                                       uint64_t positions, int32_t batch, uint64_t stream) {
  FI_GUARD_BEGIN
  if (batch < 0) return set_error(FI_ERR_INVALID_ARGUMENT, "batch %d", batch);
  if (batch == 0) return FI_OK;
  batch_indices_positions_kernel<<<batch, 128, 0, as_stream(stream)>>>(
      as_ptr<const int>(append_indptr), as_ptr<const int>(seq_lens), as_ptr<int>(batch_indices), as_ptr<int>(positions));
  FI_CHECK_LAUNCH("get_batch_indices_positions");
  return FI_OK;
  FI_GUARD_END
}

int32_t fi_get_seq_lens(uint64_t indptr, uint64_t last_page_len, uint64_t seq_lens, int32_t batch, int32_t page_size,
                        uint64_t stream) {
  FI_GUARD_BEGIN
  if (batch < 0 || page_size <= 0) return set_error(FI_ERR_INVALID_ARGUMENT, "batch %d page size %d", batch, page_size);
  if (batch == 0) return FI_OK;
  seq_lens_kernel<<<(batch + 127) / 128, 128, 0, as_stream(stream)>>>(
      as_ptr<const int>(indptr), as_ptr<const int>(last_page_len), as_ptr<int>(seq_lens), batch, page_size);
  FI_CHECK_LAUNCH("get_seq_lens");
  return FI_OK;
  FI_GUARD_END
}

}  // extern "C"
