// gemm_avx512.cpp: AVX-512 micro-kernels (to come).
