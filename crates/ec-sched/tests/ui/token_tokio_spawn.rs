// A token cannot be moved into a tokio task, which may run on any worker.
fn leak(token: ec_sched::SchedulerToken) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async move {
        tokio::spawn(async move { drop(token) });
    });
}

fn main() {}
