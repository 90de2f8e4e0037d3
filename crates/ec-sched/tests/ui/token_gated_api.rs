// A state-changing API cannot be called without the token, and nothing else
// stands in for one.
use ec_sched::testing::Harness;
use ec_types::{Binding, Config};

fn main() {
    let mut harness = Harness::new(Config::default());
    let (_token, scheduler) = harness.parts();
    let _ = scheduler.register_binding(Binding::named("b1"));
    let _ = scheduler.register_binding(&(), Binding::named("b2"));
}
