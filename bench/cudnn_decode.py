# cuDNN decode (torch SDPA) at the issue-3 shapes, median µs: one line to interleave with our decode report
# in the same GPU call (run on the device machine: python3 bench/cudnn_decode.py).
import torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
from triton.testing import do_bench
out = []
for (B, L) in [(16, 4096), (64, 2048), (128, 8192), (256, 1024)]:
    q = torch.randn(B, 32, 1, 128, dtype=torch.bfloat16, device="cuda")
    k = torch.randn(B, 8, L, 128, dtype=torch.bfloat16, device="cuda"); v = torch.randn_like(k)
    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        fn = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        fn(); torch.cuda.synchronize()
        out.append(f"B{B} {do_bench(fn, warmup=25, rep=300, return_mode='median') * 1e3:.2f}")
    del q, k, v
print("cudnn", " / ".join(out))
