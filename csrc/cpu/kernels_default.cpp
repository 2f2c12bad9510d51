// Baseline build of the SIMD kernels (guidance and w2s_loss): whatever the compiler's default target allows.
#define CPU_CAPABILITY DEFAULT
#include "dense_kernel.h"
#include "w2s_loss_kernel.h"
SGG_INSTANTIATE_DENSE_KERNELS
SGG_INSTANTIATE_W2S_KERNELS
