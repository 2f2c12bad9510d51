// Baseline build of the dense kernel: whatever the compiler's default target allows.
#define CPU_CAPABILITY DEFAULT
#include "dense_kernel.h"
SGG_INSTANTIATE_DENSE_KERNELS
