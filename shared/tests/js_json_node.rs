//! Our webhook body text against Node itself: for many generated values, `js_json::stringify(v)` must equal what
//! Node prints for `JSON.stringify(JSON.parse(serde_json::to_string(v)))`, and Node re-stringifying our text must
//! give our text back (which is what the caller hashes).

use std::io::Write;
use std::process::{Command, Stdio};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Number, Value};
use shared::adapters::outbound::js_json::stringify;

const NODE: &str = "/usr/bin/node";

/// Runs `JSON.stringify(JSON.parse(text))` in Node for each text; `None` (with a loud message) when Node is absent.
fn node_restringify(texts: &[String]) -> Option<Vec<String>> {
    let node = if std::path::Path::new(NODE).exists() {
        NODE
    } else {
        "node"
    };
    let script = r#"
        let input = '';
        process.stdin.setEncoding('utf8');
        process.stdin.on('data', chunk => { input += chunk; });
        process.stdin.on('end', () => {
            const texts = JSON.parse(input);
            process.stdout.write(JSON.stringify(texts.map(text => JSON.stringify(JSON.parse(text)))));
        });
    "#;
    let mut child = match Command::new(node)
        .arg("-e")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("\n!!!!!!!! SKIPPED: `node` is not installed; the JavaScript comparison did NOT run !!!!!!!!\n");
            return None;
        }
        Err(error) => panic!("could not start node: {error}"),
    };
    let input = serde_json::to_string(texts).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(output.status.success(), "node failed: {:?}", output.status);
    Some(serde_json::from_slice(&output.stdout).unwrap())
}

fn random_string(rng: &mut StdRng) -> String {
    const PIECES: &[&str] = &[
        "a",
        "Z",
        "0",
        " ",
        "\"",
        "\\",
        "/",
        "\u{8}",
        "\u{c}",
        "\n",
        "\r",
        "\t",
        "\u{0}",
        "\u{1}",
        "\u{1f}",
        "\u{7f}",
        "\u{80}",
        "é",
        "ß",
        "中文",
        "\u{2028}",
        "\u{2029}",
        "\u{feff}",
        "😀",
        "👨‍👩‍👧",
        "\u{10ffff}",
        "<",
        ">",
        "&",
        "'",
        "__proto__",
        "1",
        "01",
        "-1",
    ];
    let length = rng.gen_range(0..8);
    (0..length).map(|_| PIECES[rng.gen_range(0..PIECES.len())]).collect()
}

fn random_key(rng: &mut StdRng) -> String {
    match rng.gen_range(0..6) {
        // Array-index-like keys, which JavaScript enumerates first in numeric order.
        0 => rng.gen_range(0..20u32).to_string(),
        1 => ["4294967294", "4294967295", "4294967296", "00", "1.5", "-0", "1e2"][rng.gen_range(0..7)].to_owned(),
        _ => random_string(rng),
    }
}

fn random_number(rng: &mut StdRng) -> Number {
    match rng.gen_range(0..9) {
        0 => Number::from(rng.gen::<u64>()),
        1 => Number::from(rng.gen::<i64>()),
        2 => Number::from(rng.gen_range(-1000i64..1000)),
        // Around 2^53, where doubles stop holding every integer.
        3 => Number::from((1u64 << 53) + rng.gen_range(0..64)),
        4 => Number::from_f64(f64::from(rng.gen_range(-1_000_000i32..1_000_000)) / 1000.0).unwrap(),
        // Any finite double at all, every exponent included.
        5 => loop {
            if let Some(number) = Number::from_f64(f64::from_bits(rng.gen())) {
                break number;
            }
        },
        6 => {
            let exponent = rng.gen_range(-30..30);
            Number::from_f64(rng.gen_range(1.0..10.0) * 10f64.powi(exponent)).unwrap()
        }
        7 => {
            let exponent = [-7, -6, -5, 20, 21, 22][rng.gen_range(0..6)];
            let sign = if rng.gen() { 1.0 } else { -1.0 };
            Number::from_f64(sign * 10f64.powi(exponent) * [1.0, 1.5, 1.2345][rng.gen_range(0..3)]).unwrap()
        }
        _ => Number::from_f64([0.0, -0.0, 0.1, 0.5, 1e21, 1e-7, 5e-324, f64::MAX][rng.gen_range(0..8)]).unwrap(),
    }
}

fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    let leaf_only = depth >= 4;
    match rng.gen_range(0..if leaf_only { 4 } else { 6 }) {
        0 => [Value::Null, Value::Bool(true), Value::Bool(false)][rng.gen_range(0..3)].clone(),
        1 => Value::Number(random_number(rng)),
        2 => Value::String(random_string(rng)),
        3 => Value::Number(random_number(rng)),
        4 => Value::Array((0..rng.gen_range(0..5)).map(|_| random_value(rng, depth + 1)).collect()),
        _ => {
            let mut map = Map::new();
            for _ in 0..rng.gen_range(0..6) {
                map.insert(random_key(rng), random_value(rng, depth + 1));
            }
            Value::Object(map)
        }
    }
}

#[test]
fn stringify_matches_node_for_generated_values() {
    let mut rng = StdRng::seed_from_u64(0x005e_ed0f_d311_7e27);
    let values: Vec<Value> = (0..4000).map(|_| random_value(&mut rng, 0)).collect();
    let serde_texts: Vec<String> = values
        .iter()
        .map(|value| serde_json::to_string(value).unwrap())
        .collect();
    let ours: Vec<String> = values.iter().map(stringify).collect();

    let Some(from_serde) = node_restringify(&serde_texts) else {
        return;
    };
    let Some(from_ours) = node_restringify(&ours) else {
        return;
    };
    let mut mismatches = 0;
    for (index, ((ours, node_of_serde), node_of_ours)) in ours.iter().zip(&from_serde).zip(&from_ours).enumerate() {
        if ours != node_of_serde || ours != node_of_ours {
            mismatches += 1;
            if mismatches <= 5 {
                eprintln!(
                    "value {index}: serde {}\n  ours      {ours}\n  node(serde) {node_of_serde}\n  node(ours)  {node_of_ours}",
                    serde_texts[index]
                );
            }
        }
    }
    assert_eq!(
        mismatches,
        0,
        "{mismatches} of {} values differ from Node",
        values.len()
    );
}

#[test]
fn stringify_matches_node_for_every_number_shape() {
    let mut rng = StdRng::seed_from_u64(42);
    let numbers: Vec<Value> = (0..100_000).map(|_| Value::Number(random_number(&mut rng))).collect();
    let serde_texts: Vec<String> = numbers
        .iter()
        .map(|value| serde_json::to_string(value).unwrap())
        .collect();
    let Some(from_node) = node_restringify(&serde_texts) else {
        return;
    };
    for ((value, text), node) in numbers.iter().zip(&serde_texts).zip(&from_node) {
        assert_eq!(&stringify(value), node, "number {text}");
    }
}
