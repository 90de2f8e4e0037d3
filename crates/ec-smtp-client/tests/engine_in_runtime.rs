//! An engine started and stopped from inside an application's own tokio
//! runtime, with either thread layout.

use std::sync::mpsc;

use ec_sched::Report;
use ec_smtp_client::{Engine, EngineOptions};
use ec_types::Config;

fn start_and_stop_inside_runtime(io_threads: usize, drop_only: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut options = EngineOptions::default();
        options.io_threads = io_threads;
        let (reports, _received) = mpsc::channel::<Report>();
        let engine = Engine::start(Config::default(), options, reports).expect("engine starts");
        if drop_only {
            drop(engine);
        } else {
            let stats = engine.shutdown().expect("scheduler stopped cleanly");
            assert_eq!(stats.connections.live(), 0);
        }
    });
}

#[test]
fn shutdown_inside_runtime_with_session_threads() {
    start_and_stop_inside_runtime(2, false);
}

#[test]
fn drop_inside_runtime_with_session_threads() {
    start_and_stop_inside_runtime(2, true);
}

#[test]
fn shutdown_inside_runtime_on_one_thread() {
    start_and_stop_inside_runtime(0, false);
}
