// Error plumbing shared by the .cu files: a thread-local last-error message and the macros that turn
// CUDA failures into a status code. Nothing here prints, throws across the ABI or aborts.
#pragma once
#include <cuda_runtime.h>

#include <cstdarg>
#include <cstdio>
#include <exception>

#include "flashinfer_ts.h"

namespace fi {

// Records a printf-style message as this thread's last error and returns code.
int32_t set_error(int32_t code, const char* fmt, ...);
void clear_error();

inline int32_t cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return FI_OK;
  cudaGetLastError();  // clear the sticky-free error state so later calls are not blamed
  int32_t code = (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) ? FI_ERR_NO_DEVICE
                                                                                  : FI_ERR_CUDA;
  // `what` is the failing call's source text; its function name is enough for the message.
  int name_len = 0;
  while (what[name_len] && what[name_len] != '(') ++name_len;
  return set_error(code, "%.*s: %s (%s)", name_len, what, cudaGetErrorString(err), cudaGetErrorName(err));
}

inline cudaStream_t as_stream(uint64_t s) { return reinterpret_cast<cudaStream_t>(s); }
template <typename T>
inline T* as_ptr(uint64_t p) { return reinterpret_cast<T*>(p); }

}  // namespace fi

// Runs a CUDA call; on failure records the message and returns its status from the caller.
#define FI_CUDA(call)                                               \
  do {                                                              \
    cudaError_t fi_err_ = (call);                                   \
    if (fi_err_ != cudaSuccess) return ::fi::cuda_status(fi_err_, #call); \
  } while (0)

// Checks the launch that just happened.
#define FI_CHECK_LAUNCH(name) FI_CUDA(cudaPeekAtLastError())

// Wraps an entry point body: no C++ exception crosses the ABI.
#define FI_GUARD_BEGIN try {
#define FI_GUARD_END                                                              \
  }                                                                               \
  catch (const std::exception& e) {                                               \
    return ::fi::set_error(FI_ERR_INVALID_ARGUMENT, "internal error: %s", e.what()); \
  }                                                                               \
  catch (...) {                                                                   \
    return ::fi::set_error(FI_ERR_INVALID_ARGUMENT, "internal error");            \
  }
