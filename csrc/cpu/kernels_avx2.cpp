// AVX2 build of the SIMD kernels (guidance and w2s_loss); setup.py compiles this file alone with -mavx2 -mfma -mf16c.
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#include "dense_kernel.h"
#include "w2s_loss_kernel.h"
SGG_INSTANTIATE_DENSE_KERNELS
SGG_INSTANTIATE_W2S_KERNELS
