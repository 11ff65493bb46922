// RingKernel device runtime: slot-ring queue protocol and HLC merge, written against the device
// primitives above (one set per C-family target: CUDA C for the GPU, host C for the CUDA
// backend's host emulation, which is how CI runs this protocol against the Rust host side
// without a GPU). Generated into every kernel source by ringkernel-codegen.
//
// Memory contract (mirrors ringkernel-core's docs; per-queue ownership in ringkernel-codegen's
// c_family.rs):
//   * slot publish/free: release store of the slot's `seq`; readers load `seq` with acquire.
//   * position claims on a multi-producer ring (another kernel's inbox): compare-and-swap of
//     `tail` (relaxed is enough: ownership comes from the `seq` protocol, the CAS only decides who
//     wins a position). A ring's single consumer or producer keeps its index in a register and
//     stores it plainly.
//   * lifecycle: the host writes the kernel's `ctl` word (release); the kernel loads it with
//     acquire; the kernel stores `terminated = 1` with release after its last output.

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
