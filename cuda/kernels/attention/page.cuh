// Paged KV cache maintenance: appending tokens, and the small metadata kernels (FlashInfer's
// get_batch_indices_positions and get_seq_lens).
#pragma once
#include <stdint.h>

namespace fi::attn {

struct AppendArgs {
  const uint8_t* key;    // [nnz, Hkv, D]: key + n * key_sn + h * key_sh (bytes)
  const uint8_t* value;
  uint8_t* k_cache;      // page p, slot s, head h at p * sp + s * ss + h * sh (bytes)
  uint8_t* v_cache;
  const int* batch_indices;  // [nnz]
  const int* positions;      // [nnz]
  const int* indices;        // page table
  const int* indptr;         // [batch + 1]
  int64_t key_sn, key_sh, value_sn, value_sh, sp, ss, sh;
  int nnz, heads, row_bytes, page_size, num_pages;
};

// One block per token, 16-byte chunks of every head. Pages outside [0, num_pages) are skipped rather
// than written (the host checks the tables it is given; this guards the device-side ones).
__global__ void append_paged_kv_kernel(const AppendArgs a) {
  const int n = blockIdx.x;
  const int b = a.batch_indices[n], pos = a.positions[n];
  const int page = a.indices[a.indptr[b] + pos / a.page_size];
  if (page < 0 || page >= a.num_pages) return;
  const int64_t base = int64_t(page) * a.sp + int64_t(pos % a.page_size) * a.ss;
  const int chunks = a.row_bytes / 16;
  for (int i = threadIdx.x; i < a.heads * chunks; i += blockDim.x) {
    const int h = i / chunks, c = (i % chunks) * 16;
    *reinterpret_cast<uint4*>(a.k_cache + base + h * a.sh + c) =
        *reinterpret_cast<const uint4*>(a.key + n * a.key_sn + h * a.key_sh + c);
    *reinterpret_cast<uint4*>(a.v_cache + base + h * a.sh + c) =
        *reinterpret_cast<const uint4*>(a.value + n * a.value_sn + h * a.value_sh + c);
  }
}

// batch_indices[i] = b and positions[i] = seq_lens[b] - (indptr[b+1] - indptr[b]) + (i - indptr[b]).
__global__ void batch_indices_positions_kernel(const int* append_indptr, const int* seq_lens, int* batch_indices,
                                               int* positions) {
  const int b = blockIdx.x;
  const int start = append_indptr[b], len = append_indptr[b + 1] - start;
  for (int i = threadIdx.x; i < len; i += blockDim.x) {
    batch_indices[start + i] = b;
    positions[start + i] = seq_lens[b] - len + i;
  }
}

// seq_lens[b] = (pages - 1) * page_size + last_page_len[b], or 0 for a request with no pages.
__global__ void seq_lens_kernel(const int* indptr, const int* last_page_len, int* seq_lens, int batch, int page_size) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= batch) return;
  const int pages = indptr[b + 1] - indptr[b];
  seq_lens[b] = pages > 0 ? (pages - 1) * page_size + last_page_len[b] : 0;
}

}  // namespace fi::attn
