// RingKernel device primitives for CUDA C (NVRTC/nvcc): what the C-family device runtime below
// needs from the device. Every access uses system scope (`.sys`), because most queues and the
// control words live in pinned host memory mapped into the device and the other side is a CPU
// thread.
#define RK_DEVICE static __device__ __forceinline__
#define RK_KERNEL extern "C" __global__ void
#define RK_IS_LEADER() (threadIdx.x == 0 && blockIdx.x == 0)
RK_DEVICE uint32_t rk_load_acquire(const uint32_t* p) {
    uint32_t v;
    asm volatile("ld.acquire.sys.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
RK_DEVICE uint32_t rk_load_relaxed(const uint32_t* p) {
    uint32_t v;
    asm volatile("ld.relaxed.sys.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
RK_DEVICE void rk_store_release(uint32_t* p, uint32_t v) {
    asm volatile("st.release.sys.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
RK_DEVICE void rk_store_relaxed(uint32_t* p, uint32_t v) {
    asm volatile("st.relaxed.sys.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
RK_DEVICE int rk_cas(uint32_t* p, uint32_t expected, uint32_t desired) {
    return atomicCAS_system((unsigned int*)p, expected, desired) == expected;
}
RK_DEVICE void rk_store_u64_relaxed(uint64_t* p, uint64_t v) {
    asm volatile("st.relaxed.sys.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
RK_DEVICE uint64_t rk_load_u64_acquire(const uint64_t* p) {
    uint64_t v;
    asm volatile("ld.acquire.sys.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}
RK_DEVICE void rk_fence_system(void) {
    __threadfence_system();
}
RK_DEVICE uint64_t rk_now_us(void) {
    uint64_t ns;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));
    return ns / 1000;
}
// Idle back-off of a persistent kernel. Each poll of a queue in mapped memory is itself a PCIe
// read (about a microsecond), so short sleeps cost little latency; after a few thousand empty
// polls (milliseconds) the kernel sleeps 2 µs between polls to keep the bus quiet.
RK_DEVICE void rk_pause(uint32_t idle) {
    __nanosleep(idle < 4096u ? 128u : 2048u);
}
// Read-modify-writes with acquire-release semantics for the group protocol (ready marks, the
// `pending` count): the system-scope atomics are relaxed, so a system fence on each side gives
// them the ordering of their C11 acq_rel counterparts in the host emulation.
RK_DEVICE uint32_t rk_fetch_add(uint32_t* p, uint32_t v) {
    __threadfence_system();
    uint32_t old = atomicAdd_system((unsigned int*)p, v);
    __threadfence_system();
    return old;
}
RK_DEVICE uint32_t rk_fetch_or(uint32_t* p, uint32_t v) {
    __threadfence_system();
    uint32_t old = atomicOr_system((unsigned int*)p, v);
    __threadfence_system();
    return old;
}
RK_DEVICE uint32_t rk_fetch_and(uint32_t* p, uint32_t v) {
    __threadfence_system();
    uint32_t old = atomicAnd_system((unsigned int*)p, v);
    __threadfence_system();
    return old;
}
RK_DEVICE int rk_cas_acqrel(uint32_t* p, uint32_t expected, uint32_t desired) {
    __threadfence_system();
    int ok = atomicCAS_system((unsigned int*)p, expected, desired) == expected;
    __threadfence_system();
    return ok;
}
#define RK_GROUP_ENTRY extern "C" __global__ void rk_group_main(rk_group_desc* g)
#define RK_GROUP_WORKER() (threadIdx.x == 0 ? blockIdx.x : 0xFFFFFFFFu)
