//! The submit function refuses to start without what it needs: exit status 1 and one log line naming the
//! missing variable, before any contact with the Runtime API (the checks: testkit::lambda_init).

use testkit::lambda_init::{
    assert_needs_aws_credentials, assert_needs_the_queue, assert_needs_the_store, assert_refuses_to_start_open,
};

const BINARY: &str = env!("CARGO_BIN_EXE_submit");

#[test]
fn without_a_store_it_exits_naming_the_variable() {
    assert_needs_the_store(BINARY, "submit");
}

#[test]
fn without_the_queue_url_it_exits_naming_the_variable() {
    assert_needs_the_queue(BINARY, "submit");
}

#[test]
fn without_the_aws_region_or_credentials_it_exits_naming_the_variable() {
    assert_needs_aws_credentials(BINARY, "submit");
}

#[test]
fn without_api_keys_it_refuses_to_start_open() {
    assert_refuses_to_start_open(BINARY, "submit", true);
}
