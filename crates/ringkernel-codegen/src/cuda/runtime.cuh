// RingKernel device runtime: slot-ring queue protocol and HLC merge. Generated into every kernel
// source by ringkernel-codegen; the same text compiles as CUDA C (NVRTC/nvcc) and, under the host
// shim below, as plain C for host threads, which is how CI runs this protocol against the Rust
// host side without a GPU.
//
// Memory contract (mirrors ringkernel-core's docs; per-queue ownership in ringkernel-codegen's
// cuda.rs):
//   * slot publish/free: release store of the slot's `seq`; readers load `seq` with acquire.
//   * position claims on a multi-producer ring (another kernel's inbox): compare-and-swap of
//     `tail` (relaxed is enough: ownership comes from the `seq` protocol, the CAS only decides who
//     wins a position). A ring's single consumer or producer keeps its index in a register and
//     stores it plainly.
//   * lifecycle: the host writes the kernel's `ctl` word (release); the kernel loads it with
//     acquire; the kernel stores `terminated = 1` with release after its last output.
// On the GPU every access uses system scope (`.sys`), because most queues and the control words
// live in pinned host memory mapped into the device and the other side is a CPU thread.

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
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
#else
// Host shim: the same protocol with GCC/Clang atomics, one host thread per kernel.
#include <sched.h>
#include <time.h>
#define RK_DEVICE static inline
#define RK_KERNEL void
#define RK_IS_LEADER() 1
RK_DEVICE uint32_t rk_load_acquire(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
RK_DEVICE uint32_t rk_load_relaxed(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
RK_DEVICE void rk_store_release(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
RK_DEVICE void rk_store_relaxed(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
RK_DEVICE int rk_cas(uint32_t* p, uint32_t expected, uint32_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}
RK_DEVICE void rk_store_u64_relaxed(uint64_t* p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
RK_DEVICE uint64_t rk_load_u64_acquire(const uint64_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
RK_DEVICE void rk_fence_system(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
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
#endif

#define RK_VOID_LEN 0xFFFFFFFFu
#define RK_ENVELOPE_MAGIC 0x314D4B52u /* "RKM1" little-endian */
#define RK_ENVELOPE_VERSION 1u
#define RK_FLAG_REPLY 1u
#define RK_FLAG_ERROR_REPLY 2u
#define RK_HLC_SHIFT 12u

typedef struct {
    rk_queue_header* header;
    rk_slot_meta* meta;
    uint8_t* data;
    uint32_t mask;
    uint32_t capacity;
    uint32_t slot_size;
    // The single consumer's `head` and the single producer's `tail`, kept in registers: the side
    // that owns an index never reads it back (over PCIe, for a ring in mapped memory).
    uint32_t own_head;
    uint32_t own_tail;
} rk_ring;

RK_DEVICE rk_ring rk_ring_attach(uint8_t* region) {
    rk_ring r;
    r.header = (rk_queue_header*)region;
    r.capacity = r.header->capacity;
    r.mask = r.header->mask;
    r.slot_size = r.header->slot_size;
    r.own_head = rk_load_relaxed(&r.header->head);
    r.own_tail = rk_load_relaxed(&r.header->tail);
    r.meta = (rk_slot_meta*)(region + sizeof(rk_queue_header));
    r.data = region + ((sizeof(rk_queue_header) + (uint64_t)r.capacity * sizeof(rk_slot_meta) + 127u) & ~(uint64_t)127u);
    return r;
}

// Frees a popped slot for the producer of the next lap.
RK_DEVICE void rk_ring_release(rk_ring* r, uint32_t pos) {
    rk_store_release(&r->meta[pos & r->mask].seq, pos + r->capacity);
}

// Claims a free slot for writing (NULL if the ring is full).
RK_DEVICE uint8_t* rk_ring_claim_push(rk_ring* r, uint32_t* pos_out) {
    uint32_t pos = rk_load_relaxed(&r->header->tail);
    for (;;) {
        rk_slot_meta* m = &r->meta[pos & r->mask];
        int32_t diff = (int32_t)(rk_load_acquire(&m->seq) - pos);
        if (diff == 0) {
            if (rk_cas(&r->header->tail, pos, pos + 1u)) {
                *pos_out = pos;
                return r->data + (uint64_t)(pos & r->mask) * r->slot_size;
            }
            pos = rk_load_relaxed(&r->header->tail);
        } else if (diff < 0) {
            return 0;
        } else {
            pos = rk_load_relaxed(&r->header->tail);
        }
    }
}

// Publishes a written slot (`len` bytes, or RK_VOID_LEN to have consumers skip it).
RK_DEVICE void rk_ring_publish(rk_ring* r, uint32_t pos, uint32_t len) {
    rk_slot_meta* m = &r->meta[pos & r->mask];
    rk_store_relaxed(&m->len, len);
    rk_store_release(&m->seq, pos + 1u);
}

// Single-consumer pop, for a ring with exactly one consumer (this kernel): `head` is written by
// the consumer only, so it is a plain store instead of a compare-and-swap. Used for the input
// ring in mapped host memory (the host never pops it while the kernel runs) and for the inbox.
RK_DEVICE uint8_t* rk_ring_pop_single(rk_ring* r, uint32_t* pos_out, uint32_t* len_out) {
    uint32_t pos = r->own_head;
    rk_slot_meta* m = &r->meta[pos & r->mask];
    // Acquire: pairs with the producer's release of `seq`; the slot bytes and `len` are visible.
    if (rk_load_acquire(&m->seq) != pos + 1u) return 0;
    rk_store_relaxed(&r->header->head, pos + 1u);
    r->own_head = pos + 1u;
    *pos_out = pos;
    *len_out = rk_load_relaxed(&m->len);
    return r->data + (uint64_t)(pos & r->mask) * r->slot_size;
}

// Undoes a rk_ring_pop_single whose slot was not released yet (the message stays queued).
RK_DEVICE void rk_ring_unpop_single(rk_ring* r, uint32_t pos) {
    rk_store_relaxed(&r->header->head, pos);
    r->own_head = pos;
}

// Single-producer push, for the output ring (this kernel is its only producer): `tail` is
// advanced with a plain store, so no read-modify-write crosses PCIe.
RK_DEVICE uint8_t* rk_ring_push_single(rk_ring* r, uint32_t* pos_out) {
    uint32_t pos = r->own_tail;
    rk_slot_meta* m = &r->meta[pos & r->mask];
    // Acquire: pairs with the consumer's release in rk_ring_release (its reads are done).
    if (rk_load_acquire(&m->seq) != pos) return 0;
    rk_store_relaxed(&r->header->tail, pos + 1u);
    r->own_tail = pos + 1u;
    *pos_out = pos;
    return r->data + (uint64_t)(pos & r->mask) * r->slot_size;
}

// HLC merge: max(local + 1, remote + 1, wall << 12), on packed words. Saturates at the largest
// packed value (as ringkernel-core's HlcClock does): a clock never wraps and runs backwards.
RK_DEVICE uint64_t rk_hlc_merge(uint64_t local, uint64_t remote) {
    uint64_t top = local > remote ? local : remote;
    uint64_t next = top == 0xFFFFFFFFFFFFFFFFull ? top : top + 1u;
    uint64_t wall = rk_now_us() << RK_HLC_SHIFT;
    return next > wall ? next : wall;
}
