// A token cannot be shared with another thread either: it is not Sync.
fn share(token: &'static ec_sched::SchedulerToken) {
    std::thread::spawn(move || println!("{token:?}"));
}

fn main() {}
