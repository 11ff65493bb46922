// RingKernel device primitives for host C (the CUDA backend's host emulation): the protocol of
// the device runtime below with GCC/Clang atomics, one host thread per kernel.
#include <sched.h>
#include <time.h>
#define RK_DEVICE static inline
#define RK_KERNEL void
#define RK_IS_LEADER() 1
#ifdef RK_CHAOS
// Chaos mode (`CudaConfig::emulate_chaos`): before every atomic access a thread yields its core
// with probability 1/4 (a per-thread xorshift seeded from its stack address), so the emulation
// explores many more interleavings of the device protocol than the scheduler alone would give.
static __thread uint32_t rk_chaos_state;
RK_DEVICE void rk_chaos(void) {
    uint32_t x = rk_chaos_state;
    if (x == 0u) x = (uint32_t)(uintptr_t)&x | 1u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    rk_chaos_state = x;
    if ((x & 3u) == 0u) sched_yield();
}
#else
#define rk_chaos() ((void)0)
#endif
RK_DEVICE uint32_t rk_load_acquire(const uint32_t* p) { rk_chaos(); return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
RK_DEVICE uint32_t rk_load_relaxed(const uint32_t* p) { rk_chaos(); return __atomic_load_n(p, __ATOMIC_RELAXED); }
RK_DEVICE void rk_store_release(uint32_t* p, uint32_t v) { rk_chaos(); __atomic_store_n(p, v, __ATOMIC_RELEASE); }
RK_DEVICE void rk_store_relaxed(uint32_t* p, uint32_t v) { rk_chaos(); __atomic_store_n(p, v, __ATOMIC_RELAXED); }
RK_DEVICE int rk_cas(uint32_t* p, uint32_t expected, uint32_t desired) {
    rk_chaos();
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}
RK_DEVICE void rk_store_u64_relaxed(uint64_t* p, uint64_t v) { rk_chaos(); __atomic_store_n(p, v, __ATOMIC_RELAXED); }
RK_DEVICE uint64_t rk_load_u64_acquire(const uint64_t* p) { rk_chaos(); return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
RK_DEVICE void rk_fence_system(void) { rk_chaos(); __atomic_thread_fence(__ATOMIC_SEQ_CST); }
RK_DEVICE uint64_t rk_now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
// Idle back-off of a host thread standing in for a GPU thread: yield at first, then sleep up to
// 1 ms, so dozens of idle emulated kernels do not occupy the CPU.
RK_DEVICE void rk_pause(uint32_t idle) {
    if (idle < 64u) {
        sched_yield();
        return;
    }
    uint32_t us = idle - 64u;
    struct timespec ts = {0, (long)(us < 100u ? us * 10000u : 1000000u)};
    nanosleep(&ts, 0);
}
RK_DEVICE uint32_t rk_fetch_add(uint32_t* p, uint32_t v) { rk_chaos(); return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
RK_DEVICE uint32_t rk_fetch_or(uint32_t* p, uint32_t v) { rk_chaos(); return __atomic_fetch_or(p, v, __ATOMIC_ACQ_REL); }
RK_DEVICE uint32_t rk_fetch_and(uint32_t* p, uint32_t v) { rk_chaos(); return __atomic_fetch_and(p, v, __ATOMIC_ACQ_REL); }
RK_DEVICE int rk_cas_acqrel(uint32_t* p, uint32_t expected, uint32_t desired) {
    rk_chaos();
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
// The emulation starts one host thread per worker and passes its index.
#define RK_GROUP_ENTRY void rk_group_main(rk_group_desc* g, uint32_t rk_worker_index)
#define RK_GROUP_WORKER() rk_worker_index
