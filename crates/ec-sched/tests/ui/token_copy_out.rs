// A harness lends its token but never gives it away: it cannot be copied
// or moved out of the borrow.
use ec_sched::testing::Harness;
use ec_types::Config;

fn main() {
    let mut harness = Harness::new(Config::default());
    let (token, _scheduler) = harness.parts();
    let owned: ec_sched::SchedulerToken = *token;
    drop(owned);
}
