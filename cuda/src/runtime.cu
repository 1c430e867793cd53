// Library identity, errors, devices, memory, streams, events and CUDA graphs.
#include <cstring>
#include <string>

#include "status.h"

#ifndef FI_SOURCE_HASH
#define FI_SOURCE_HASH "unknown"
#endif

namespace fi {
namespace {
thread_local std::string last_error;

int32_t copy_string(const char* s, uint8_t* buf, size_t n) {
  if (buf == nullptr || n == 0) return FI_OK;
  size_t len = std::strlen(s);
  if (len >= n) len = n - 1;
  std::memcpy(buf, s, len);
  buf[len] = 0;
  return FI_OK;
}
}  // namespace

int32_t set_error(int32_t code, const char* fmt, ...) {
  char msg[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(msg, sizeof msg, fmt, args);
  va_end(args);
  last_error = msg;
  return code;
}

void clear_error() { last_error.clear(); }
}  // namespace fi

using namespace fi;

extern "C" {

int32_t fi_abi_version(void) { return FI_ABI_VERSION; }

int32_t fi_source_hash(uint8_t* buf, size_t n) { return copy_string(FI_SOURCE_HASH, buf, n); }

int32_t fi_last_error(uint8_t* buf, size_t n) { return copy_string(last_error.c_str(), buf, n); }

int32_t fi_device_count(int32_t* out) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
    cudaGetLastError();
    *out = 0;
    return FI_OK;
  }
  FI_CUDA(err);
  *out = count;
  return FI_OK;
}

int32_t fi_device_get(int32_t* out) {
  int d = 0;
  FI_CUDA(cudaGetDevice(&d));
  *out = d;
  return FI_OK;
}

int32_t fi_device_set(int32_t device) {
  FI_CUDA(cudaSetDevice(device));
  return FI_OK;
}

int32_t fi_device_props(int32_t device, int64_t* out, uint8_t* name, size_t n) {
  cudaDeviceProp p;
  FI_CUDA(cudaGetDeviceProperties(&p, device));
  int clock_khz = 0, bus_width = 0;
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device);
  cudaDeviceGetAttribute(&bus_width, cudaDevAttrGlobalMemoryBusWidth, device);
  out[0] = p.multiProcessorCount;
  out[1] = p.major;
  out[2] = p.minor;
  out[3] = static_cast<int64_t>(p.totalGlobalMem);
  out[4] = p.l2CacheSize;
  out[5] = static_cast<int64_t>(p.sharedMemPerBlockOptin);
  out[6] = bus_width;
  out[7] = clock_khz;
  return copy_string(p.name, name, n);
}

int32_t fi_device_mem_info(int64_t* out) {
  size_t free_b = 0, total_b = 0;
  FI_CUDA(cudaMemGetInfo(&free_b, &total_b));
  out[0] = static_cast<int64_t>(free_b);
  out[1] = static_cast<int64_t>(total_b);
  return FI_OK;
}

int32_t fi_device_synchronize(void) {
  FI_CUDA(cudaDeviceSynchronize());
  return FI_OK;
}

int32_t fi_malloc(uint64_t bytes, uint64_t* out_ptr) {
  void* p = nullptr;
  FI_CUDA(cudaMalloc(&p, bytes == 0 ? 1 : bytes));
  *out_ptr = reinterpret_cast<uint64_t>(p);
  return FI_OK;
}

int32_t fi_free(uint64_t ptr) {
  FI_CUDA(cudaFree(as_ptr<void>(ptr)));
  return FI_OK;
}

int32_t fi_host_alloc(uint64_t bytes, uint64_t* out_ptr) {
  void* p = nullptr;
  FI_CUDA(cudaMallocHost(&p, bytes == 0 ? 1 : bytes));
  *out_ptr = reinterpret_cast<uint64_t>(p);
  return FI_OK;
}

int32_t fi_host_free(uint64_t ptr) {
  FI_CUDA(cudaFreeHost(as_ptr<void>(ptr)));
  return FI_OK;
}

int32_t fi_copy_h2d(uint64_t dst, const uint8_t* src, uint64_t bytes, uint64_t stream) {
  if (bytes == 0) return FI_OK;
  FI_CUDA(cudaMemcpyAsync(as_ptr<void>(dst), src, bytes, cudaMemcpyHostToDevice, as_stream(stream)));
  // The source is the caller's pageable buffer: wait so it may be reused or collected at once.
  FI_CUDA(cudaStreamSynchronize(as_stream(stream)));
  return FI_OK;
}

int32_t fi_copy_d2h(uint8_t* dst, uint64_t src, uint64_t bytes, uint64_t stream) {
  if (bytes == 0) return FI_OK;
  FI_CUDA(cudaMemcpyAsync(dst, as_ptr<void>(src), bytes, cudaMemcpyDeviceToHost, as_stream(stream)));
  FI_CUDA(cudaStreamSynchronize(as_stream(stream)));
  return FI_OK;
}

int32_t fi_copy_async(uint64_t dst, uint64_t src, uint64_t bytes, uint64_t stream) {
  if (bytes == 0) return FI_OK;
  FI_CUDA(cudaMemcpyAsync(as_ptr<void>(dst), as_ptr<void>(src), bytes, cudaMemcpyDefault,
                          as_stream(stream)));
  return FI_OK;
}

int32_t fi_copy_2d_async(uint64_t dst, uint64_t dst_pitch, uint64_t src, uint64_t src_pitch,
                         uint64_t width_bytes, uint64_t rows, uint64_t stream) {
  if (width_bytes == 0 || rows == 0) return FI_OK;
  FI_CUDA(cudaMemcpy2DAsync(as_ptr<void>(dst), dst_pitch, as_ptr<void>(src), src_pitch, width_bytes,
                            rows, cudaMemcpyDefault, as_stream(stream)));
  return FI_OK;
}

int32_t fi_memset_async(uint64_t dst, int32_t byte_value, uint64_t bytes, uint64_t stream) {
  if (bytes == 0) return FI_OK;
  FI_CUDA(cudaMemsetAsync(as_ptr<void>(dst), byte_value, bytes, as_stream(stream)));
  return FI_OK;
}

int32_t fi_stream_create(uint64_t* out) {
  cudaStream_t s;
  FI_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  *out = reinterpret_cast<uint64_t>(s);
  return FI_OK;
}

int32_t fi_stream_destroy(uint64_t stream) {
  FI_CUDA(cudaStreamDestroy(as_stream(stream)));
  return FI_OK;
}

int32_t fi_stream_synchronize(uint64_t stream) {
  FI_CUDA(cudaStreamSynchronize(as_stream(stream)));
  return FI_OK;
}

int32_t fi_stream_query(uint64_t stream, int32_t* out_done) {
  cudaError_t err = cudaStreamQuery(as_stream(stream));
  if (err == cudaErrorNotReady) {
    cudaGetLastError();
    *out_done = 0;
    return FI_OK;
  }
  FI_CUDA(err);
  *out_done = 1;
  return FI_OK;
}

int32_t fi_event_create(int32_t timing, uint64_t* out) {
  cudaEvent_t e;
  FI_CUDA(cudaEventCreateWithFlags(&e, timing ? cudaEventDefault : cudaEventDisableTiming));
  *out = reinterpret_cast<uint64_t>(e);
  return FI_OK;
}

int32_t fi_event_destroy(uint64_t event) {
  FI_CUDA(cudaEventDestroy(reinterpret_cast<cudaEvent_t>(event)));
  return FI_OK;
}

int32_t fi_event_record(uint64_t event, uint64_t stream) {
  FI_CUDA(cudaEventRecord(reinterpret_cast<cudaEvent_t>(event), as_stream(stream)));
  return FI_OK;
}

int32_t fi_event_synchronize(uint64_t event) {
  FI_CUDA(cudaEventSynchronize(reinterpret_cast<cudaEvent_t>(event)));
  return FI_OK;
}

int32_t fi_event_elapsed_ms(uint64_t start, uint64_t end, float* out_ms) {
  FI_CUDA(cudaEventElapsedTime(out_ms, reinterpret_cast<cudaEvent_t>(start),
                               reinterpret_cast<cudaEvent_t>(end)));
  return FI_OK;
}

int32_t fi_graph_begin_capture(uint64_t stream) {
  FI_CUDA(cudaStreamBeginCapture(as_stream(stream), cudaStreamCaptureModeThreadLocal));
  return FI_OK;
}

int32_t fi_graph_end_capture(uint64_t stream, uint64_t* out_exec) {
  cudaGraph_t graph = nullptr;
  FI_CUDA(cudaStreamEndCapture(as_stream(stream), &graph));
  cudaGraphExec_t exec = nullptr;
  cudaError_t err = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  FI_CUDA(err);
  *out_exec = reinterpret_cast<uint64_t>(exec);
  return FI_OK;
}

int32_t fi_graph_launch(uint64_t exec, uint64_t stream) {
  FI_CUDA(cudaGraphLaunch(reinterpret_cast<cudaGraphExec_t>(exec), as_stream(stream)));
  return FI_OK;
}

int32_t fi_graph_destroy(uint64_t exec) {
  FI_CUDA(cudaGraphExecDestroy(reinterpret_cast<cudaGraphExec_t>(exec)));
  return FI_OK;
}

}  // extern "C"
