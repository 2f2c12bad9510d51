// AVX-512 build of the SIMD kernels (guidance and w2s_loss); setup.py compiles this file alone with -mavx512{f,bw,vl,dq}.
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#include "dense_kernel.h"
#include "w2s_loss_kernel.h"
SGG_INSTANTIATE_DENSE_KERNELS
SGG_INSTANTIATE_W2S_KERNELS
