/** CUDA devices: count, properties, the current device, memory. */
import { FlashInferError } from "./errors.ts";
import { check, native } from "./library.ts";

const i32Out = new Int32Array(1);

export interface DeviceProperties {
  readonly index: number;
  readonly name: string;
  readonly smCount: number;
  readonly computeCapability: readonly [major: number, minor: number];
  readonly totalMemory: number;
  readonly l2CacheBytes: number;
  readonly maxSharedMemoryPerBlock: number;
  /** Peak DRAM bandwidth from the bus width and memory clock (bytes/s), a datasheet-style figure. */
  readonly peakMemoryBandwidth: number;
}

const cache = new Map<number, DeviceProperties>();

export class Device {
  /** How many CUDA devices this process can see (0 without a GPU or driver). */
  static count(): number {
    check(native().fi_device_count(i32Out), "cudaGetDeviceCount");
    return i32Out[0];
  }

  /** Throws unless a GPU is present: a clear error instead of a failing kernel launch. */
  static require(): void {
    if (Device.count() === 0) {
      throw new FlashInferError("NO_GPU", "Cannot run on the GPU as no CUDA device was found (no GPU or no driver)");
    }
  }

  /** The calling thread's current device. */
  static current(): DeviceProperties {
    Device.require();
    check(native().fi_device_get(i32Out), "cudaGetDevice");
    return Device.properties(i32Out[0]);
  }

  /** Makes `index` the current device of this thread. */
  static use(index: number): void {
    const count = Device.count();
    if (!Number.isInteger(index) || index < 0 || index >= count) {
      throw new FlashInferError(
        "INVALID_ARGUMENT",
        `Cannot use device as 'index' must be an integer in [0, ${count}): received ${index}`,
      );
    }
    check(native().fi_device_set(index), "cudaSetDevice");
  }

  static properties(index: number): DeviceProperties {
    let p = cache.get(index);
    if (p) return p;
    const out = new BigInt64Array(8);
    const name = new Uint8Array(256);
    check(native().fi_device_props(index, out, name, name.length), "cudaGetDeviceProperties");
    const n = Array.from(out, Number);
    const end = name.indexOf(0);
    p = {
      index,
      name: new TextDecoder().decode(name.subarray(0, end < 0 ? name.length : end)),
      smCount: n[0],
      computeCapability: [n[1], n[2]],
      totalMemory: n[3],
      l2CacheBytes: n[4],
      maxSharedMemoryPerBlock: n[5],
      peakMemoryBandwidth: 2 * (n[6] / 8) * n[7] * 1e3,
    };
    cache.set(index, p);
    return p;
  }

  /** Free and total device memory in bytes. */
  static memoryInfo(): { free: number; total: number } {
    const out = new BigInt64Array(2);
    check(native().fi_device_mem_info(out), "cudaMemGetInfo");
    return { free: Number(out[0]), total: Number(out[1]) };
  }

  /** Waits for all work on the current device. */
  static synchronize(): void {
    check(native().fi_device_synchronize(), "cudaDeviceSynchronize");
  }
}
