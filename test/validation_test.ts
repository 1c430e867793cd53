// Bad input is refused in TypeScript before any native call: these run without a GPU or library
// (tensors wrap fake addresses, which no native call ever sees).
import { fusedAddRmsnorm, layernorm, rmsnorm } from "../src/ops/norm.ts";
import { siluAndMul } from "../src/ops/activation.ts";
import { applyRope, applyRopePosIds, applyRopeWithCosSinCache } from "../src/ops/rope.ts";
import { Tensor } from "../src/runtime/tensor.ts";
import { Stream } from "../src/runtime/stream.ts";
import { assert, assertThrowsCode, test } from "./harness.ts";

let addr = 0x100000n;
const fake = (shape: number[], dtype: Parameters<typeof Tensor.fromPointer>[2]) =>
  Tensor.fromPointer(addr += 0x100000n, shape, dtype);

test("validation: norms", () => {
  const x = fake([4, 64], "bf16"), w = fake([64], "bf16");
  assertThrowsCode(
    () => rmsnorm(fake([4, 64], "f32"), w),
    "INVALID_ARGUMENT",
    /Cannot rmsnorm as 'input' must be of dtype f16 or bf16: received "f32"/,
  );
  assertThrowsCode(
    () => rmsnorm(x, fake([64], "f16")),
    "INVALID_ARGUMENT",
    /'weight' must be of the dtype of 'input' \(bf16\): received "f16"/,
  );
  assertThrowsCode(
    () => rmsnorm(x, fake([63], "bf16")),
    "INVALID_ARGUMENT",
    /'weight' must be of shape \[64\]: received shape \[63\]/,
  );
  assertThrowsCode(
    () => rmsnorm(x, w, { eps: -1 }),
    "INVALID_ARGUMENT",
    /'eps' must be a finite number >= 0: received -1/,
  );
  assertThrowsCode(
    () => rmsnorm(x, w, { out: fake([4, 32], "bf16") }),
    "INVALID_ARGUMENT",
    /'out' must be of shape \[4, 64\]/,
  );
  assertThrowsCode(
    () => rmsnorm(Tensor.fromPointer(0x1000n, [4, 64], "bf16", [128, 2]), w),
    "INVALID_ARGUMENT",
    /contiguous in its last dimension/,
  );
  assertThrowsCode(() => rmsnorm(fake([], "bf16"), w), "INVALID_ARGUMENT", /at least 1-dimensional/);
  assertThrowsCode(
    () => rmsnorm("x" as unknown as Tensor, w),
    "INVALID_ARGUMENT",
    /'input' must be a Tensor: received "x"/,
  );
  assertThrowsCode(
    () => fusedAddRmsnorm(x, fake([4, 65], "bf16"), w),
    "INVALID_ARGUMENT",
    /'residual' must be of shape \[4, 64\]/,
  );
  assertThrowsCode(
    () => layernorm(x, fake([64], "f16"), fake([64], "f16")),
    "INVALID_ARGUMENT",
    /'gamma' must be of dtype f32 or bf16: received "f16"/,
  );
  assertThrowsCode(
    () => layernorm(x, fake([64], "f32"), fake([64], "bf16")),
    "INVALID_ARGUMENT",
    /'beta' must be of the dtype of 'gamma' \(f32\)/,
  );
});

test("validation: a disposed tensor is refused by name", () => {
  const x = fake([4, 64], "bf16");
  x.dispose();
  assertThrowsCode(
    () => rmsnorm(x, fake([64], "bf16")),
    "INVALID_ARGUMENT",
    /'input' must be a live tensor: received a disposed Tensor\(bf16, \[4, 64\]\)/,
  );
  assertThrowsCode(() => x.ptr, "DISPOSED");
});

test("validation: activations", () => {
  assertThrowsCode(
    () => siluAndMul(fake([4, 63], "f16")),
    "INVALID_ARGUMENT",
    /Cannot siluAndMul as 'input' must be of even size in its last dimension: received 63/,
  );
  assertThrowsCode(
    () => siluAndMul(fake([4, 64], "f16"), { out: fake([4, 64], "f16") }),
    "INVALID_ARGUMENT",
    /'out' must be of shape \[4, 32\]/,
  );
  assertThrowsCode(() => siluAndMul(fake([4, 64], "i32")), "INVALID_ARGUMENT", /must be of dtype f16 or bf16/);
});

test("validation: rope", () => {
  const q = fake([10, 8, 128], "bf16"), k = fake([10, 2, 128], "bf16");
  const indptr = fake([3], "i32"), offsets = fake([2], "i32");
  assertThrowsCode(
    () => applyRope(q, fake([9, 2, 128], "bf16"), indptr, offsets),
    "INVALID_ARGUMENT",
    /'k' must be of 10 tokens like 'q'/,
  );
  assertThrowsCode(
    () => applyRope(q, fake([10, 2, 64], "bf16"), indptr, offsets),
    "INVALID_ARGUMENT",
    /'k' must be of head dim 128 like 'q'/,
  );
  assertThrowsCode(
    () => applyRope(q, k, indptr, offsets, { rotaryDim: 130 }),
    "INVALID_ARGUMENT",
    /'rotaryDim' must be an even integer in \[2, 128\]: received 130/,
  );
  assertThrowsCode(() => applyRope(q, k, indptr, offsets, { rotaryDim: 63 }), "INVALID_ARGUMENT", /rotaryDim/);
  assertThrowsCode(
    () => applyRope(q, k, indptr, fake([3], "i32")),
    "INVALID_ARGUMENT",
    /'offsets' must be of shape \[2\]/,
  );
  assertThrowsCode(
    () => applyRope(q, k, fake([3], "i64"), offsets),
    "INVALID_ARGUMENT",
    /'indptr' must be of dtype i32/,
  );
  assertThrowsCode(
    () => applyRope(q, k, indptr, offsets, { ropeTheta: 0 }),
    "INVALID_ARGUMENT",
    /'ropeTheta' must be a positive number: received 0/,
  );
  assertThrowsCode(
    () => applyRopePosIds(q, k, fake([11], "i32")),
    "INVALID_ARGUMENT",
    /'positions' must be of shape \[10\]/,
  );
  assertThrowsCode(
    () => applyRopePosIds(q, k, fake([10], "f32")),
    "INVALID_ARGUMENT",
    /'positions' must be of dtype i32 or i64/,
  );
  assertThrowsCode(
    () => applyRopePosIds(fake([10, 8], "bf16"), k, fake([10], "i32")),
    "INVALID_ARGUMENT",
    /'q' must be 3-dimensional: received shape \[10, 8\]/,
  );
  const q2 = fake([10, 8 * 128], "bf16"), k2 = fake([10, 2 * 128], "bf16");
  assertThrowsCode(
    () => applyRopeWithCosSinCache(fake([10], "i64"), q2, k2, 100, fake([64, 128], "f32")),
    "INVALID_ARGUMENT",
    /'q' must be a multiple of headSize 100 wide/,
  );
  assertThrowsCode(
    () => applyRopeWithCosSinCache(fake([10], "i64"), q2, k2, 128, fake([64, 128], "bf16")),
    "INVALID_ARGUMENT",
    /'cosSinCache' must be of dtype f32/,
  );
});

test("validation: tensor constructors", () => {
  assertThrowsCode(
    () => Tensor.fromPointer(0n, [2], "f32"),
    "INVALID_ARGUMENT",
    /'ptr' must be a positive bigint: received 0n/,
  );
  assertThrowsCode(
    () => Tensor.fromPointer(16n, [2, -1], "f32"),
    "INVALID_ARGUMENT",
    /'shape' must be an array of non-negative integers: received \[2, -1\]/,
  );
  assertThrowsCode(
    () => Tensor.fromPointer(16n, [2], "f64" as "f32"),
    "INVALID_ARGUMENT",
    /'dtype' must be a dtype name/,
  );
  assertThrowsCode(
    () => fake([4, 6], "f32").narrow(1, 4, 3),
    "INVALID_ARGUMENT",
    /'start \+ length' must be within \[0, 6\]: received 4 \+ 3/,
  );
  assertThrowsCode(
    () => fake([4, 6], "f32").reshape([5, 5]),
    "INVALID_ARGUMENT",
    /'shape' must be 24 elements like \[4, 6\]/,
  );
});

test("streams: the default stream survives dispose; a wrapped one is refused after dispose", () => {
  Stream.default.dispose();
  assert.equal(Stream.default.handle, 0n);
  const wrapped = Stream.fromPointer(0x1234n);
  assert.equal(wrapped.handle, 0x1234n);
  wrapped.dispose();
  wrapped.dispose();
  assertThrowsCode(() => wrapped.handle, "DISPOSED", /Cannot use the stream as it was disposed/);
  assertThrowsCode(() => Stream.fromPointer(-1n), "INVALID_ARGUMENT", /'handle' must be a non-negative bigint/);
});
