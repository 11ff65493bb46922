// Handler of the "adder" test kernel: request {a: u64, b: u64} (type 0xA001),
// reply {sum: u64, running_total: u64} (type 0xA002); the running total is persistent state.
typedef struct { uint64_t a; uint64_t b; } adder_request;
typedef struct { uint64_t sum; uint64_t running_total; } adder_reply;

RK_DEVICE int32_t rk_handle_adder(uint8_t* state, const rk_envelope_header* msg, const uint8_t* payload,
                                  uint8_t* out, uint32_t out_capacity, uint64_t* reply_type) {
    if (msg->type_id != 0xA001u || msg->payload_len != sizeof(adder_request) || out_capacity < sizeof(adder_reply)) {
        return -1;
    }
    const adder_request* req = (const adder_request*)payload;
    uint64_t* total = (uint64_t*)state;
    *total += req->a + req->b;
    adder_reply* rep = (adder_reply*)out;
    rep->sum = req->a + req->b;
    rep->running_total = *total;
    *reply_type = 0xA002u;
    return (int32_t)sizeof(adder_reply);
}
