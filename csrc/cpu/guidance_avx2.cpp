// AVX2 build of the dense kernel; setup.py compiles this file alone with -mavx2 -mfma -mf16c.
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#include "dense_kernel.h"
SGG_INSTANTIATE_DENSE_KERNELS
