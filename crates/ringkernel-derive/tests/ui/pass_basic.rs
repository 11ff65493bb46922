use ringkernel::prelude::*;

#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[message(type_id = 0x42)]
struct Ping {
    n: u32,
}

#[derive(RingMessage, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
enum Event {
    Start,
    Stop(u8),
}

#[ring_kernel(name = "pinger")]
fn on_ping(state: &mut u32, msg: Ping) -> Ping {
    *state += 1;
    Ping { n: msg.n + *state }
}

#[ring_kernel]
fn on_event(_state: &mut (), _e: Event, _ctx: &mut Context<'_>) {}

fn main() {
    assert_eq!(Ping::message_type(), 0x42);
    assert!(Event::message_type() >> 63 == 1);
}
