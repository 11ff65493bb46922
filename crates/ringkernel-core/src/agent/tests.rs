//! Unit tests of the skeleton with a fake device step (no device needed): record phases, routing
//! through the target caches, the two-strike rule, device loss, and the thread's lifecycle.

use super::*;
use crate::backoff::Backoff;
use crate::hlc::HlcTimestamp;
use crate::message::{
    decode_header, encode, EnvelopeMeta, KernelId, FLAG_ERROR_REPLY, FLAG_KERNEL_FAILED, FLAG_REPLY,
};
use crate::runtime::{Directory, ErrorReply, GpuProgram, KernelCell, KernelDef, KernelState, LaunchOptions};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROUTE_BASE: u32 = 0x8000_0000;

/// A program that only names routes.
struct Routes(Vec<String>);

impl GpuProgram for Routes {
    fn backend(&self) -> crate::runtime::Backend {
        crate::runtime::Backend::Custom("fake")
    }
    fn handled_types(&self) -> Vec<(u64, core::any::TypeId, &'static str)> {
        Vec::new()
    }
    fn payload_check(&self, _: u64) -> Option<crate::runtime::PayloadCheck> {
        None
    }
    fn as_any(&self) -> &dyn core::any::Any {
        self
    }
}

type Log = Arc<Mutex<Vec<String>>>;

#[derive(Default)]
struct Fake {
    log: Log,
    host_owns_input: bool,
    lost_ends: bool,
}

impl Fake {
    fn note(&self, e: String) {
        self.log.lock().unwrap().push(e);
    }
}

impl DeviceStep for Fake {
    type Kernel = ();
    const NAME: &'static str = "fake";
    const THREAD: &'static str = "fake agent";
    const IDLE: Backoff = Backoff::park_only(Duration::from_millis(1));
    const BLOCKED: Backoff = Backoff::park_only(Duration::from_millis(1));
    const ROUTE_BASE: Option<u32> = Some(ROUTE_BASE);

    fn routes(def: &KernelDef) -> &[String] {
        &def.gpu_program::<Routes>().expect("a fake program").0
    }
    fn describe_error(_: &KernelDef, code: u32) -> String {
        format!("code {code}")
    }
    fn device_fault(&mut self) -> Option<String> {
        None
    }
    fn round(&mut self, kernels: &mut Kernels<()>) -> Busy {
        for i in 0..kernels.len() {
            if !kernels[i].is_gone() && kernels.live_cell(i, self).is_some() {
                kernels[i].start();
            }
        }
        self.note("round".into());
        Busy::Idle
    }
    fn release(&mut self, rec: &mut Record<()>, ending: Ending) {
        self.note(format!("release {} {ending:?}", rec.id()));
    }
    fn stop_taking_input(&mut self, rec: &mut Record<()>, _: &KernelCell) -> bool {
        self.note(format!("stop input {}", rec.id()));
        self.host_owns_input
    }
    fn device_lost(&mut self, _: &mut Record<()>) -> bool {
        self.lost_ends
    }
    fn stop(&mut self, _: &mut Kernels<()>) {
        self.note("stop".into());
    }
}

fn launch(dir: &Arc<Directory>, id: u32, name: &str, routes: &[&str]) -> (Arc<KernelCell>, Arc<KernelDef>) {
    let def =
        Arc::new(KernelDef::new::<()>(name).gpu(Routes(routes.iter().map(|r| r.to_string()).collect())));
    let cell = Arc::new(
        KernelCell::new(KernelId(id), name, Some(def.accepted_types()), LaunchOptions::default(), Vec::new())
            .unwrap(),
    );
    cell.transition(KernelState::Active).unwrap();
    cell.control.set_active(true);
    dir.insert(cell.clone()).unwrap();
    (cell, def)
}

fn record(cell: &Arc<KernelCell>, def: &Arc<KernelDef>, dir: &Arc<Directory>) -> Record<()> {
    Record::new(cell, def, dir, Phase::Running, ())
}

fn set(recs: Vec<Record<()>>) -> Kernels<()> {
    let mut k = Kernels::default();
    k.extend(recs);
    k
}

/// An envelope from `source` to `destination` (a one-way message unless `flags` say otherwise).
fn envelope(source: u32, destination: u32, corr: u64, flags: u16, payload: &str) -> Vec<u8> {
    let meta = EnvelopeMeta {
        correlation_id: corr,
        source,
        destination,
        hlc: HlcTimestamp::from_packed(0, source),
        flags,
    };
    let mut buf = vec![0u8; 256];
    let n = encode(&ErrorReply(payload.into()), &meta, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn pop_input(cell: &KernelCell) -> Option<Vec<u8>> {
    let mut got = None;
    cell.input().pop_batch_with(1, |b| got = Some(b.to_vec()));
    got
}

#[test]
fn phases() {
    let dir = Arc::new(Directory::default());
    let (a, def) = launch(&dir, 1, "a", &[]);
    let mut r = Record::new(&a, &def, &dir, Phase::Starting, ());
    assert_eq!(r.phase(), Phase::Starting);
    r.start();
    assert_eq!(r.phase(), Phase::Running);
    r.fail();
    r.start();
    assert!(r.is_failed(), "a failed record does not run again");
    assert!(r.leave());
    assert!(!r.leave(), "a record leaves once");
    r.fail();
    assert!(r.is_gone());
    assert!(r.take_dirty(), "a new record is looked at once");
    assert!(!r.take_dirty());
}

#[test]
fn routing_uses_cached_targets_and_patches_route_indices() {
    let dir = Arc::new(Directory::default());
    let (a, def) = launch(&dir, 1, "a", &["b"]);
    let (b, _) = launch(&dir, 2, "b", &[]);
    let mut r = record(&a, &def, &dir);
    // By id.
    assert!(!r.route_output::<Fake>(&a, &envelope(1, 2, 0, 0, "by id")));
    let (h, _) = decode_header(&pop_input(&b).unwrap()).unwrap().to_owned();
    assert_eq!(h.destination, 2);
    // By route index: resolved by name, the destination patched with the target's id.
    assert!(r.route_output::<Fake>(&a, &envelope(1, ROUTE_BASE, 0, 0, "by route")));
    let bytes = pop_input(&b).unwrap();
    let (h, payload) = decode_header(&bytes).unwrap();
    assert_eq!((h.destination, payload), (2, &b"by route"[..]));
    assert_eq!(b.control.messages_in_flight(), 2);
    // The target terminates and a new kernel takes its name: the cached target is dropped.
    b.abort("replaced");
    dir.forget(&b);
    let (b2, _) = launch(&dir, 3, "b", &[]);
    assert!(r.route_output::<Fake>(&a, &envelope(1, ROUTE_BASE, 0, 0, "to the new b")));
    let (h, _) = decode_header(&pop_input(&b2).unwrap()).unwrap();
    assert_eq!(h.destination, 3);
    // A message for the terminated kernel by id is kept, not lost.
    assert!(!r.route_output::<Fake>(&a, &envelope(1, 2, 0, 0, "late")));
    assert_eq!(a.returned().len(), 1);
    // A route index without a route is kept as written.
    assert!(r.route_output::<Fake>(&a, &envelope(1, ROUTE_BASE + 5, 0, 0, "nowhere")));
    assert_eq!(a.returned()[1].header.destination, ROUTE_BASE + 5);
    // For the host: an emit goes to the output queue.
    r.route_output::<Fake>(&a, &envelope(1, 0, 0, 0, "emit"));
    assert_eq!(a.output_len(), 1);
}

#[test]
fn an_error_reply_answers_the_call_with_the_programs_text() {
    let dir = Arc::new(Directory::default());
    let (a, def) = launch(&dir, 1, "a", &[]);
    let mut r = record(&a, &def, &dir);
    let t = a.replies.claim().unwrap();
    let mut env = envelope(1, 0, t.correlation_id(), FLAG_REPLY | FLAG_ERROR_REPLY, "");
    // The payload is the handler's error code.
    let code = 7u32.to_le_bytes();
    let payload_len = core::mem::offset_of!(crate::message::EnvelopeHeader, payload_len);
    env[payload_len..payload_len + 4].copy_from_slice(&4u32.to_le_bytes());
    env.extend_from_slice(&code);
    r.route_output::<Fake>(&a, &env);
    let core::task::Poll::Ready(reply) = a.replies.poll_take(t, None) else { panic!("not answered") };
    let (h, payload) = decode_header(&reply).unwrap();
    assert_ne!(h.flags & FLAG_ERROR_REPLY, 0);
    assert_eq!(h.flags & FLAG_KERNEL_FAILED, 0, "the kernel goes on");
    assert_eq!(payload, b"handler error: code 7");
    assert_eq!(a.last_error().as_deref(), Some("handler error: code 7"));
}

#[test]
fn two_strikes() {
    for host_owns_input in [false, true] {
        let dir = Arc::new(Directory::default());
        let (a, def) = launch(&dir, 1, "a", &[]);
        a.push_input_bytes(&envelope(0, 1, 0, 0, "queued"));
        let mut ks = set(vec![record(&a, &def, &dir)]);
        let mut fake = Fake { host_owns_input, ..Fake::default() };
        assert!(ks.serve(0, &mut fake, |_, _| panic!("boom")).is_none());
        assert_eq!(a.state(), KernelState::Failed);
        let last = a.last_error().unwrap();
        assert!(last.contains("fake agent panicked") && last.contains("boom"), "{last}");
        assert_eq!(ks[0].is_failed(), host_owns_input);
        // The host took the input over and handed the one-way message back, or left it to the
        // device.
        assert_eq!(a.returned().len(), usize::from(host_owns_input));
        assert_eq!(ks.serve(0, &mut fake, |_, _| 5), Some(5));
        assert!(ks.serve(0, &mut fake, |_, _| panic!("again")).is_none());
        assert!(ks[0].is_gone());
        assert_eq!(ks.gone(), 1);
        assert_eq!(a.state(), KernelState::Terminated);
        assert!(dir.by_id(KernelId(1)).is_none());
        assert_eq!(*fake.log.lock().unwrap(), ["stop input 1", "release 1 Abandoned"]);
    }
}

#[test]
fn device_loss_fails_every_kernel() {
    let dir = Arc::new(Directory::default());
    let (a, def_a) = launch(&dir, 1, "a", &[]);
    let (b, def_b) = launch(&dir, 2, "b", &[]);
    a.transition(KernelState::Terminating).unwrap();
    a.control.request_terminate();
    let t = b.replies.claim().unwrap();
    let mut ks = set(vec![record(&b, &def_b, &dir), record(&a, &def_a, &dir)]);
    let mut fake = Fake { lost_ends: true, ..Fake::default() };
    ks.fail_all(&mut fake, "unplugged");
    assert_eq!(b.state(), KernelState::Failed);
    assert_eq!(b.last_error().as_deref(), Some("the fake device failed: unplugged"));
    let core::task::Poll::Ready(reply) = b.replies.poll_take(t, None) else { panic!("call left waiting") };
    assert_ne!(decode_header(&reply).unwrap().0.flags & FLAG_KERNEL_FAILED, 0);
    // The terminating kernel's termination can no longer finish on the device: it ends now.
    assert_eq!(a.state(), KernelState::Terminated);
    assert!(a.control.is_terminated());
    assert!(ks[0].is_gone() && ks[1].is_failed(), "records in launch order");
    assert_eq!(*fake.log.lock().unwrap(), ["release 1 Terminated"]);
    // Failing again changes nothing.
    ks.fail_all(&mut fake, "again");
    assert_eq!(b.last_error().as_deref(), Some("the fake device failed: unplugged"));
}

#[test]
fn a_dropped_cell_is_abandoned() {
    let dir = Arc::new(Directory::default());
    let (a, def) = launch(&dir, 1, "a", &[]);
    let mut ks = set(vec![record(&a, &def, &dir)]);
    dir.forget(&a);
    drop(a);
    let mut fake = Fake::default();
    assert!(ks.live_cell(0, &mut fake).is_none());
    assert!(ks[0].is_gone());
    ks.retain(|r| !r.is_gone());
    assert!(ks.is_empty() && ks.gone() == 0);
    assert_eq!(*fake.log.lock().unwrap(), ["release 1 Abandoned"]);
}

#[test]
fn the_thread_serves_attached_kernels_and_aborts_the_rest_at_shutdown() {
    let dir = Arc::new(Directory::default());
    let (a, def) = launch(&dir, 1, "a", &[]);
    let fake = Fake::default();
    let log = fake.log.clone();
    let agent = Agent::spawn("rk-test-agent", fake).unwrap();
    agent.attach(&a, &def, &dir, (), None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.lock().unwrap().iter().any(|e| e == "round") {
        assert!(Instant::now() < deadline, "no round ran");
        std::thread::sleep(Duration::from_millis(1));
    }
    agent.shutdown();
    agent.shutdown();
    assert_eq!(log.lock().unwrap().last().map(String::as_str), Some("stop"));
    assert_eq!(a.state(), KernelState::Terminated, "aborted by the shutdown");
}
