// A token cannot be built with a struct literal: its fields are private.
use std::marker::PhantomData;

fn main() {
    let _token = ec_sched::SchedulerToken {
        _not_send: PhantomData,
    };
}
