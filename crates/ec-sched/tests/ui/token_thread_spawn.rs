// A token cannot be moved to another thread: it is not Send.
fn leak(token: ec_sched::SchedulerToken) {
    std::thread::spawn(move || drop(token));
}

fn main() {}
