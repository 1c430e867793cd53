/**
 * One transformer layer's element-wise work on the GPU: residual add + RMSNorm, RoPE on q/k, and the
 * SwiGLU gate, on random bf16 data. Run: deno run -A examples/transformer_ops.ts (or bun ...).
 */
import { applyRopePosIdsInplace, Device, fusedAddRmsnorm, siluAndMul, Stream, Tensor } from "../mod.ts";

const tokens = 8, hidden = 4096, heads = 32, kvHeads = 8, headDim = 128, ffn = 14336;
const random = (n: number) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);

console.log(`running on ${Device.current().name}`);
using stream = new Stream();
using x = Tensor.fromArray(random(tokens * hidden), [tokens, hidden], "bf16");
using residual = Tensor.fromArray(random(tokens * hidden), [tokens, hidden], "bf16");
using normWeight = Tensor.fromArray(random(hidden), [hidden], "bf16");
fusedAddRmsnorm(x, residual, normWeight, { eps: 1e-5, stream }); // residual += x; x = rmsnorm(residual)

using q = Tensor.fromArray(random(tokens * heads * headDim), [tokens, heads, headDim], "bf16");
using k = Tensor.fromArray(random(tokens * kvHeads * headDim), [tokens, kvHeads, headDim], "bf16");
using positions = Tensor.fromArray(Array.from({ length: tokens }, (_, i) => 100 + i), [tokens], "i32");
// Llama 3.1 checkpoints would use applyLlama31RopePosIdsInplace (frequency smoothing).
applyRopePosIdsInplace(q, k, positions, { ropeTheta: 5e5, stream });

using gateUp = Tensor.fromArray(random(tokens * 2 * ffn), [tokens, 2 * ffn], "bf16");
using act = siluAndMul(gateUp, { stream }); // [tokens, ffn]

stream.synchronize();
console.log("normed row 0, first values:", Array.from(x.narrow(0, 0, 1).toArray().subarray(0, 4)));
console.log("rotated q[0, 0, :4]:", Array.from(q.toArray().subarray(0, 4)));
console.log("act shape:", act.shape);
