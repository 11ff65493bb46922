// Handler of the "adder" test kernel, written against the declarations generated from the Rust
// types in adder_types.rs: AdderRequest {a, b: u64, terms: Vec<u32>} -> AdderReply {sum,
// running_total: u64, echo: Vec<u32>}; the running total is persistent state (AdderState).
RK_DEVICE uint32_t on_AdderRequest(rk_ctx* ctx, AdderState* state, const AdderRequest* m) {
    uint64_t sum = m->a + m->b;
    for (uint32_t i = 0; i < m->terms.len; i++) sum += rk_slice_u32(m->terms, i);
    state->total += sum;
    state->handled += 1u;
    AdderReply rep;
    rep.sum = sum;
    rep.running_total = state->total;
    rep.echo = m->terms;
    return rk_reply_AdderReply(ctx, &rep);
}
