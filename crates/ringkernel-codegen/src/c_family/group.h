// ---- kernel groups: instances as records in device memory, run by workers ----
// The protocol is described in ringkernel-codegen's c_family/group.rs; the mailbox is
// ringkernel_core::queue::Mailboxes's slot ring and the ready mark ringkernel_core::ready's,
// both model-checked with loom on the Rust side.
#define RK_MARK_QUEUED 1u
#define RK_MARK_NOTIFIED 2u
#define RK_FLAG_KERNEL_FAILED 8u
#define RK_FLAG_RETURNED 16u

typedef struct {
    uint32_t head;
    uint32_t tail;
} rk_mb_ends;

typedef struct {
    uint32_t seq;
    uint32_t value;
} rk_ready_slot;

RK_DEVICE uint32_t* rk_group_pending(rk_group_desc* g) { return (uint32_t*)g->shared; }
RK_DEVICE uint32_t* rk_group_restarts(rk_group_desc* g) { return (uint32_t*)g->shared + 1; }

RK_DEVICE rk_slot_meta* rk_mb_meta(rk_group_desc* g, uint32_t i, uint32_t pos) {
    return (rk_slot_meta*)g->mb_meta + ((uint64_t)i * g->mb_cap + (pos & (g->mb_cap - 1u)));
}

RK_DEVICE uint8_t* rk_mb_slot(rk_group_desc* g, uint32_t i, uint32_t pos) {
    return (uint8_t*)g->mb_data + ((uint64_t)i * g->mb_cap + (pos & (g->mb_cap - 1u))) * g->slot_size;
}

// Claims a slot of mailbox `i` (any number of producers: compare-and-swap of its tail, as
// rk_ring_claim_push). Returns 0 when the mailbox is full.
RK_DEVICE uint8_t* rk_mb_claim(rk_group_desc* g, uint32_t i, uint32_t* pos_out) {
    rk_mb_ends* e = (rk_mb_ends*)g->mb_ends + i;
    uint32_t pos = rk_load_relaxed(&e->tail);
    for (;;) {
        rk_slot_meta* m = rk_mb_meta(g, i, pos);
        // Acquire: pairs with the consumer's release of the slot (its reads are done).
        int32_t diff = (int32_t)(rk_load_acquire(&m->seq) - pos);
        if (diff == 0) {
            if (rk_cas(&e->tail, pos, pos + 1u)) {
                *pos_out = pos;
                return rk_mb_slot(g, i, pos);
            }
            pos = rk_load_relaxed(&e->tail);
        } else if (diff < 0) {
            return 0;
        } else {
            pos = rk_load_relaxed(&e->tail);
        }
    }
}

// Pops the oldest message of mailbox `i`. Only the worker that owns the instance (holds its
// ready mark) pops, so `head` is a plain store; the next owner reads it after the mark's
// acquire-release hand-over.
RK_DEVICE uint8_t* rk_mb_pop(rk_group_desc* g, uint32_t i, uint32_t* pos_out, uint32_t* len_out) {
    rk_mb_ends* e = (rk_mb_ends*)g->mb_ends + i;
    uint32_t pos = rk_load_relaxed(&e->head);
    rk_slot_meta* m = rk_mb_meta(g, i, pos);
    // Acquire: pairs with the producer's release of `seq`.
    if (rk_load_acquire(&m->seq) != pos + 1u) return 0;
    rk_store_relaxed(&e->head, pos + 1u);
    *pos_out = pos;
    *len_out = rk_load_relaxed(&m->len);
    return rk_mb_slot(g, i, pos);
}

RK_DEVICE void rk_mb_release(rk_group_desc* g, uint32_t i, uint32_t pos) {
    rk_store_release(&rk_mb_meta(g, i, pos)->seq, pos + g->mb_cap);
}

// A ring view of mailbox `i`, for rk_ring_publish (which only uses the metas and the mask).
RK_DEVICE rk_ring rk_mb_ring(rk_group_desc* g, uint32_t i) {
    rk_ring r;
    r.header = 0;
    r.meta = rk_mb_meta(g, i, 0u);
    r.data = rk_mb_slot(g, i, 0u);
    r.mask = g->mb_cap - 1u;
    r.capacity = g->mb_cap;
    r.slot_size = g->slot_size;
    r.own_head = 0u;
    r.own_tail = 0u;
    return r;
}

// The ready queue of worker `w`: instance `i` is always run by worker `i % workers`, so its
// outputs are in one output ring, in order.
RK_DEVICE uint8_t* rk_ready_queue(rk_group_desc* g, uint32_t w) {
    return (uint8_t*)g->ready + (uint64_t)w * (256u + (uint64_t)g->ready_cap * 8u);
}

RK_DEVICE rk_ready_slot* rk_ready_at(rk_group_desc* g, uint8_t* q, uint32_t pos) {
    (void)g;
    return (rk_ready_slot*)(q + 256u) + (pos & (g->ready_cap - 1u));
}

// Puts instance `i` on its worker's ready queue. It is there at most once (the ready mark), and
// the capacity is at least the worker's instance count, so a slot not yet free only means its
// previous consumer is between its claim and its release: wait for it.
RK_DEVICE void rk_ready_push(rk_group_desc* g, uint32_t i) {
    uint8_t* q = rk_ready_queue(g, i % g->workers);
    uint32_t* tail = (uint32_t*)(q + 128u);
    uint32_t pos = rk_load_relaxed(tail), spins = 0u;
    for (;;) {
        rk_ready_slot* s = rk_ready_at(g, q, pos);
        int32_t diff = (int32_t)(rk_load_acquire(&s->seq) - pos);
        if (diff == 0) {
            if (rk_cas(tail, pos, pos + 1u)) {
                rk_store_relaxed(&s->value, i);
                rk_store_release(&s->seq, pos + 1u);
                return;
            }
        } else if (diff < 0) {
            rk_pause(spins++);
        }
        pos = rk_load_relaxed(tail);
    }
}

// Takes an instance off worker `w`'s ready queue: 1 and its index in `*out`, or 0 if empty.
RK_DEVICE uint32_t rk_ready_pop(rk_group_desc* g, uint32_t w, uint32_t* out) {
    uint8_t* q = rk_ready_queue(g, w);
    uint32_t* head = (uint32_t*)q;
    uint32_t pos = rk_load_relaxed(head);
    for (;;) {
        rk_ready_slot* s = rk_ready_at(g, q, pos);
        int32_t diff = (int32_t)(rk_load_acquire(&s->seq) - (pos + 1u));
        if (diff == 0) {
            if (rk_cas(head, pos, pos + 1u)) {
                *out = rk_load_relaxed(&s->value);
                rk_store_release(&s->seq, pos + g->ready_cap);
                return 1u;
            }
            pos = rk_load_relaxed(head);
        } else if (diff < 0) {
            return 0u;
        } else {
            pos = rk_load_relaxed(head);
        }
    }
}

// Work was published for instance `i`: mark it, and queue it if it was idle (ready mark step 1).
RK_DEVICE void rk_group_wake(rk_group_desc* g, uint32_t i) {
    uint32_t prev = rk_fetch_or((uint32_t*)g->marks + i, RK_MARK_QUEUED | RK_MARK_NOTIFIED);
    if ((prev & RK_MARK_QUEUED) == 0u) rk_ready_push(g, i);
}

// Claims an output slot for a message to instance `index` of this group: in its mailbox when
// there is room (counted in `pending` first), else in this worker's output ring, addressed to
// the instance, for the host to put back into the ingress ring (a handler never waits for
// another instance's mailbox). Returns 0 when told to exit while waiting for output room.
RK_DEVICE uint32_t rk_group_out_begin(rk_ctx* ctx, uint32_t index, rk_out* o) {
    rk_group_desc* g = ctx->group;
    rk_fetch_add(rk_group_pending(g), 1u);
    o->slot = rk_mb_claim(g, index, &o->pos);
    if (o->slot) {
        o->ring = rk_mb_ring(g, index);
        o->device = 1u;
        o->target = g->base_id + index;
        o->cap_words = (g->slot_size - RK_HDR) / 4u;
        return 1u;
    }
    rk_fetch_add(rk_group_pending(g), 0xFFFFFFFFu);
    return rk_out_begin(ctx, -1, o);
}
// ---- group loop ----
// Handles one message of instance `i` (owned by this worker): as rk_process, plus the failed
// instance's answers and the restart from the initial state.
RK_DEVICE void rk_group_process(rk_group_desc* g, rk_ctx* ctx, STATE* st, uint32_t* status, uint8_t* slot,
                                uint32_t len) {
    const rk_envelope_header* msg = rk_begin_message(ctx, slot, len);
    if (!msg) return;
    if (rk_load_relaxed(status) != 0u) {
        // A failed instance: a request from the host fails with "kernel failed"; anything else
        // goes back to the host, flagged, for the terminate report.
        if (msg->correlation_id != 0u && msg->source == 0u) {
            rk_error_reply_flags(ctx, RK_ERR_INSTANCE_FAILED, RK_FLAG_KERNEL_FAILED);
            return;
        }
        rk_out o;
        if (!rk_out_begin(ctx, -1, &o)) return;
        uint32_t n = len < o.ring.slot_size ? len : o.ring.slot_size;
        for (uint32_t k = 0u; k < n; k++) o.slot[k] = slot[k];
        ((rk_envelope_header*)o.slot)->flags |= (uint16_t)RK_FLAG_RETURNED;
        rk_ring_publish(&o.ring, o.pos, n);
        return;
    }
    uint32_t code = rk_dispatch(ctx, st, msg, slot + RK_HDR);
    if (ctx->failed) {
        if (rk_fetch_add(rk_group_restarts(g), 1u) < g->max_restarts) {
            // Restart: the instance starts again from the initial state.
            const uint8_t* from = (const uint8_t*)g->init_state;
            uint8_t* to = (uint8_t*)st;
            for (uint32_t k = 0u; k < g->state_stride; k++) to[k] = from[k];
            rk_error_reply_flags(ctx, ctx->fail_code, 0u);
        } else {
            rk_store_relaxed(status, 1u);
            rk_error_reply_flags(ctx, ctx->fail_code, RK_FLAG_KERNEL_FAILED);
        }
        return;
    }
    if (code == 0u) code = ctx->error;
    if (code == 0u && msg->correlation_id != 0u && !ctx->replied) code = RK_ERR_NO_REPLY;
    if (code != 0u) rk_error_reply_flags(ctx, code, 0u);
}

// Runs instance `i`, just taken off the ready queue (ready mark steps 2 and 3). `handled` is
// this worker's count of handled messages, published in `info` before each message's handler
// runs: the host, which reads it after taking an output, never sees a reply before its count.
RK_DEVICE void rk_group_run(rk_group_desc* g, rk_ctx* ctx, uint32_t i, uint64_t* handled, uint64_t* info) {
    rk_kernel_params* p = ctx->p;
    uint32_t* mark = (uint32_t*)g->marks + i;
    rk_fetch_and(mark, ~RK_MARK_NOTIFIED);
    uint32_t* status = (uint32_t*)g->status + i;
    uint64_t* clock = (uint64_t*)g->clocks + i;
    STATE* st = (STATE*)((uint8_t*)g->states + (uint64_t)i * g->state_stride);
    ctx->self_id = g->base_id + i;
    ctx->instance = i;
    // An instance's clock never runs backwards, whichever worker runs it.
    if (*clock > ctx->clock) ctx->clock = *clock;
    uint32_t n = 0u, requeue = 0u;
    for (;;) {
        if (n >= g->budget) {
            requeue = 1u;
            break;
        }
        uint32_t c = rk_load_acquire(&p->ctl);
        if (!(c & RK_CTL_TERMINATE) && !(c & RK_CTL_ACTIVE)) {
            // Deactivated: the instance stays queued, with its messages, until activated.
            requeue = 1u;
            break;
        }
        uint32_t pos, len;
        uint8_t* slot = rk_mb_pop(g, i, &pos, &len);
        if (!slot) break;
        if (len != RK_VOID_LEN) {
            // Ordered before the handler's outputs by their release of `seq`.
            rk_store_u64_relaxed(info, ++*handled);
            rk_group_process(g, ctx, st, status, slot, len);
        }
        rk_mb_release(g, i, pos);
        // After the handler's own sends were counted: `pending` never reads 0 with work left.
        rk_fetch_add(rk_group_pending(g), 0xFFFFFFFFu);
        n++;
    }
    *clock = ctx->clock;
    if (requeue || !rk_cas_acqrel(mark, RK_MARK_QUEUED, 0u)) rk_ready_push(g, i);
}

// Worker 0: moves up to 64 envelopes from the ingress ring into their instances' mailboxes.
// Returns how many; `*empty` says whether it found the ring empty.
RK_DEVICE uint32_t rk_group_ingress(rk_group_desc* g, rk_ctx* ctx, rk_ring* in, uint32_t* empty) {
    uint32_t moved = 0u;
    *empty = 0u;
    while (moved < 64u) {
        uint32_t pos, len;
        uint8_t* slot = rk_ring_pop_single(in, &pos, &len);
        if (!slot) {
            *empty = 1u;
            return moved;
        }
        if (len == RK_VOID_LEN) {
            rk_ring_release(in, pos);
            continue;
        }
        uint32_t dest = len >= RK_HDR ? ((const rk_envelope_header*)slot)->destination : 0u;
        uint32_t i = dest - g->base_id;
        if (len < RK_HDR || dest < g->base_id || i >= g->instances) {
            // The host only queues envelopes for an instance; anything else goes back to it.
            rk_out o;
            if (!rk_out_begin(ctx, -1, &o)) return moved;
            uint32_t n = len < o.ring.slot_size ? len : o.ring.slot_size;
            for (uint32_t k = 0u; k < n; k++) o.slot[k] = slot[k];
            if (n >= RK_HDR) ((rk_envelope_header*)o.slot)->flags |= (uint16_t)RK_FLAG_RETURNED;
            rk_ring_publish(&o.ring, o.pos, n);
            rk_ring_release(in, pos);
            continue;
        }
        rk_fetch_add(rk_group_pending(g), 1u);
        uint32_t mpos;
        uint8_t* to = rk_mb_claim(g, i, &mpos);
        if (!to) {
            // The mailbox is full: leave the envelope at the head of the ring and try later.
            rk_fetch_add(rk_group_pending(g), 0xFFFFFFFFu);
            rk_ring_unpop_single(in, pos);
            return moved;
        }
        for (uint32_t k = 0u; k < len; k++) to[k] = slot[k];
        rk_slot_meta* m = rk_mb_meta(g, i, mpos);
        rk_store_relaxed(&m->len, len);
        rk_store_release(&m->seq, mpos + 1u);
        rk_ring_release(in, pos);
        moved++;
        rk_group_wake(g, i);
    }
    return moved;
}

RK_DEVICE void rk_group_worker(rk_group_desc* g, uint32_t worker) {
    rk_kernel_params* p = (rk_kernel_params*)g->params;
    rk_ctx ctx;
    ctx.p = p;
    ctx.cb = (rk_control_block*)p->cb;
    ctx.out = rk_ring_attach((uint8_t*)(g->d2h + (uint64_t)worker * g->d2h_stride));
    ctx.msg = 0;
    ctx.clock = 0u;
    ctx.sent = (uint64_t)worker << 32;
    ctx.scratch = (uint8_t*)p->scratch + (uint64_t)worker * g->scratch_bytes;
    ctx.scratch_bytes = g->scratch_bytes;
    ctx.failures = 0u;
    ctx.self_id = g->base_id;
    ctx.instance = 0u;
    ctx.group = g;
    uint64_t* info = (uint64_t*)((uint8_t*)g->worker_info + (uint64_t)worker * 64u);
    uint64_t handled = 0u, ingress_done = 0u;
    rk_ring in;
    if (worker == 0u) in = rk_ring_attach((uint8_t*)p->h2d);
    uint32_t idle = 0u;
    for (;;) {
        // One read of every lifecycle flag; acquire pairs with the host's release.
        uint32_t c = rk_load_acquire(&p->ctl);
        if (c & RK_CTL_EXIT) break;
        uint32_t busy = 0u, empty = 1u;
        if (worker == 0u) {
            uint32_t moved = rk_group_ingress(g, &ctx, &in, &empty);
            if (moved) {
                ingress_done += moved;
                rk_store_u64_relaxed(&g->ingress_done, ingress_done);
                busy = 1u;
            }
        }
        uint32_t i;
        if ((c & (RK_CTL_ACTIVE | RK_CTL_TERMINATE)) && rk_ready_pop(g, worker, &i)) {
            rk_group_run(g, &ctx, i, &handled, info);
            busy = 1u;
        }
        // Terminating, nothing left in the ingress ring (every push the host admitted happened
        // before it set TERMINATE, which the acquire above saw) and nothing pending: done.
        // Release: every output published before the last `pending` decrement is visible to
        // the host that sees `quiescent`.
        if (worker == 0u && (c & RK_CTL_TERMINATE) && empty && !busy &&
            rk_load_acquire(rk_group_pending(g)) == 0u) {
            rk_store_release(&g->quiescent, 1u);
        }
        if (busy) {
            idle = 0u;
        } else {
            rk_pause(idle++);
        }
    }
    rk_store_release((uint32_t*)(info + 1), 1u);
}

RK_GROUP_ENTRY {
    uint32_t worker = RK_GROUP_WORKER();
    if (worker != 0xFFFFFFFFu) rk_group_worker(g, worker);
}
