// gemm_avx2.cpp: AVX2+FMA micro-kernels (to come).
