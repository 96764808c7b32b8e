// CAllocCounter: counts heap allocations in the benchmark process (`make bench`).
// The executable that links this target defines malloc, calloc, realloc, posix_memalign, aligned_alloc and
// memalign itself; the dynamic linker binds every shared library's calls (libswiftCore, Foundation,
// Dispatch, OpenSSL) to the executable's definitions first, so each allocation of the process, on any
// thread, passes one relaxed atomic increment on its way to glibc's own allocator (__libc_malloc, ...).
// No LD_PRELOAD, no package. Frees are not counted.
#ifndef CALLOC_COUNTER_H
#define CALLOC_COUNTER_H

/// Allocations made by the process so far (all threads).
unsigned long long alloc_counter_total(void);

#endif
