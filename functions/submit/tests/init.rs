//! The submit function refuses to start without what it needs: exit status 1 and one log line naming the
//! missing variable, before any contact with the Runtime API.

use testkit::lambda_init::assert_refused;

fn refused(vars: &[(&str, &str)], variable: &str) {
    assert_refused(env!("CARGO_BIN_EXE_submit"), "submit", vars, variable);
}

#[test]
fn without_a_store_it_exits_naming_the_variable() {
    refused(&[], "UPSTASH_REDIS_REST_URL");
    refused(
        &[("STEP_QUEUE_URL", "http://127.0.0.1:9/000000000000/steps")],
        "UPSTASH_REDIS_REST_URL",
    );
    refused(
        &[("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:9")],
        "UPSTASH_REDIS_REST_TOKEN",
    );
}

#[test]
fn without_the_queue_url_it_exits_naming_the_variable() {
    refused(
        &[
            ("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:9"),
            ("UPSTASH_REDIS_REST_TOKEN", "t"),
        ],
        "STEP_QUEUE_URL",
    );
}

#[test]
fn without_the_aws_region_or_credentials_it_exits_naming_the_variable() {
    let base = [
        ("UPSTASH_REDIS_REST_URL", "http://127.0.0.1:9"),
        ("UPSTASH_REDIS_REST_TOKEN", "t"),
        ("STEP_QUEUE_URL", "http://127.0.0.1:9/000000000000/steps"),
    ];
    refused(&base, "AWS_REGION");
    let with = |extra: &[(&'static str, &'static str)]| base.iter().chain(extra).copied().collect::<Vec<_>>();
    refused(&with(&[("AWS_REGION", "us-east-1")]), "AWS_ACCESS_KEY_ID");
    refused(
        &with(&[("AWS_REGION", "us-east-1"), ("AWS_ACCESS_KEY_ID", "AK")]),
        "AWS_SECRET_ACCESS_KEY",
    );
}
