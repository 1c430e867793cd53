// BatchAttention's persistent kernel: prefill and decode requests of one batch in a single launch.
// Two queues of virtual CTAs, each taken in order through an atomic counter: the prefill CTAs of
// the batch prefill kernel (work entry x head pack, heaviest first) and the decode CTAs of the batch
// decode kernel (work item x kv head group). Part of the resident CTAs start on the prefill queue and
// the rest on the decode queue, and each turns to the other queue when its own runs dry: most SMs then
// hold one compute-bound prefill CTA beside one bandwidth-bound decode CTA, so the tensor cores and
// the memory system are busy at the same time instead of one after the other. The CTA bodies are the
// plain kernels' own (prefill_cta, decode_cta); only their block indices are virtual.
#pragma once
#include "../prefill/prefill.cuh"
#include "decode.cuh"

namespace fi::attn {

// The queue state lives in device memory, written by plan, so a captured launch replays any later
// plan of the same workspace: [0..2] the next prefill CTA, the next decode CTA and the CTAs done
// (zero between runs), [3] prefill work entries, [4] decode items, [5] and [6] which CTAs start on
// prefill (first_queue), [8 + s] CTAs that arrived on SM s so far (zero between runs).
constexpr int kMaxSms = 256;
constexpr int kQueueInts = 8 + kMaxSms;
struct MixedQueue {
  int* state;
  int prefill_packs;  // head packs per prefill work entry (fastest in the prefill queue)
  int decode_width;   // CTAs per decode item: kv heads x head groups (fastest in the decode queue)
  int num_sms;
};

// Which queue this CTA starts on, from the SM it landed on (block indices say nothing about
// placement). state[6] == 0 (mix): the k-th CTA to arrive on SM s is number k * num_sms + s and the
// first state[5] numbers start on prefill, so with half of them every SM holds one CTA of each kind.
// state[6] == 1 (partition): every CTA on SMs [0, state[5]) starts on prefill, the rest on decode.
__device__ __forceinline__ int first_queue(const MixedQueue& q) {
  unsigned sm;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
  if (sm >= unsigned(kMaxSms)) return blockIdx.x & 1;
  if (q.state[6] == 1) return int(sm) < q.state[5] ? 0 : 1;
  const int k = atomicAdd(q.state + 8 + sm, 1);
  return k * q.num_sms + int(sm) < q.state[5] ? 0 : 1;
}

// Out of line: inlined beside the prefill body, the two bodies share one register allocation and the
// prefill part spills; a call per decode CTA costs nothing measurable.
template <typename T, int D>
__device__ __noinline__ void decode_item(const DecodeArgs& d, int x, int y, int width) {
  decode_cta<T, T, D>(d, VirtualCta{x, y, width});
}

template <typename T, int D, int MMA_Q, int BLOCK_N>
__global__ void __launch_bounds__(128, 2)
    batch_attention_kernel(const __grid_constant__ prefill::PrefillArgs p, const __grid_constant__ DecodeArgs d,
                           const __grid_constant__ MixedQueue q) {
  __shared__ int next, first, last_out;
  const int prefill_work = q.state[3], decode_items = q.state[4];
  if (threadIdx.x == 0) first = first_queue(q);
  __syncthreads();
  for (int pass = 0; pass < 2; pass++) {
    const int kind = first ^ pass;
    const int total = kind == 0 ? prefill_work * q.prefill_packs : decode_items * q.decode_width;
    for (;;) {
      if (threadIdx.x == 0) next = atomicAdd(q.state + kind, 1);
      __syncthreads();  // also: every thread is done with the previous CTA's shared memory
      const int v = next;
      __syncthreads();
      if (v >= total) break;
      if (kind == 0) {
        prefill::prefill_cta<T, D, D, MMA_Q, BLOCK_N, false>(
            p, VirtualCta{v / q.prefill_packs, v % q.prefill_packs, prefill_work});
      } else {
        decode_item<T, D>(d, v % q.decode_width, v / q.decode_width, q.decode_width);
      }
    }
  }
  // The last CTA out leaves the counters at zero for the next run (so a CUDA graph replays as is):
  // every other CTA has made its last queue update before it counted itself done.
  if (threadIdx.x == 0) {
    __threadfence();
    last_out = atomicAdd(q.state + 2, 1) == int(gridDim.x) - 1;
    __threadfence();  // the others' queue updates are ordered before the reset below
  }
  __syncthreads();
  if (last_out) {
    for (int i = threadIdx.x; i < kMaxSms; i += blockDim.x) q.state[8 + i] = 0;
    if (threadIdx.x < 3) q.state[threadIdx.x] = 0;
  }
}

}  // namespace fi::attn
