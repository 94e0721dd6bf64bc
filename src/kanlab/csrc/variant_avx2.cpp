// The kernel's avx2 build (setup.py compiles this file with the avx2 flags of _kernel_variants.py):
// the whole kernel as one translation unit, under a file name of its own so that the variants'
// objects never share a path when they are compiled side by side.
#include "kernel.cpp"
#include "lbfgs.cpp"
