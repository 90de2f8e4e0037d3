// A token has no public constructor and no Default.
fn main() {
    let _made = ec_sched::SchedulerToken::new();
    let _defaulted: ec_sched::SchedulerToken = Default::default();
}
