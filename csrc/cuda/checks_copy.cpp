// The argument checks, compiled into the CUDA library as well: LibTorch hides every C++ symbol whose
// signature names a stable-ABI type, so this library cannot call the core library's copy. A file of
// its own gives the objects their own build paths (the two libraries' flags differ).
#include "../checks.cpp"
#include "../overlap.cpp"
