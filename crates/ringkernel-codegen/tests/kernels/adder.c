// Handler of the "adder" test kernel, written against the declarations generated from the Rust
// types in adder_types.rs: AdderRequest {a, b: u64, terms: Vec<u32>} -> AdderReply {sum,
// running_total: u64, echo: Vec<u32>}; the running total is persistent state.
RK_DEVICE int32_t rk_handle_adder(uint8_t* state, const rk_envelope_header* msg, const uint8_t* payload,
                                  uint8_t* out, uint32_t out_capacity, uint64_t* reply_type) {
    AdderRequest req;
    if (msg->type_id != RK_TYPE_AdderRequest || (msg->payload_len & 3u) != 0u ||
        rk_read_AdderRequest((const uint32_t*)payload, msg->payload_len / 4u, &req) != 0) {
        return -1;
    }
    uint64_t sum = req.a + req.b;
    for (uint32_t i = 0; i < req.terms.len; i++) sum += rk_slice_u32(req.terms, i);
    uint64_t* total = (uint64_t*)state;
    *total += sum;
    AdderReply rep;
    rep.sum = sum;
    rep.running_total = *total;
    rep.echo = req.terms;
    int32_t words = rk_write_AdderReply((uint32_t*)out, out_capacity / 4u, &rep);
    if (words < 0) return -1;
    *reply_type = RK_TYPE_AdderReply;
    return words * 4;
}
