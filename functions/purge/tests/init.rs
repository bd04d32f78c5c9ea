//! The purge function refuses to start without what it needs: exit status 1 and one log line naming the
//! missing variable, before any contact with the Runtime API (the checks: testkit::lambda_init).

#[test]
fn without_a_store_it_exits_naming_the_variable() {
    testkit::lambda_init::assert_needs_the_store(env!("CARGO_BIN_EXE_purge"), "purge");
}

#[test]
fn without_api_keys_it_refuses_to_start_open() {
    testkit::lambda_init::assert_refuses_to_start_open(env!("CARGO_BIN_EXE_purge"), "purge", false);
}
