use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::json::parse_json;
use super::yaml::parse_yaml;
use super::*;

const DEPLOYMENT_JSON: &str = include_str!("testdata/deployment.json");
const DEPLOYMENT_YAML: &str = include_str!("testdata/deployment.yaml");

fn lim() -> Limits {
    Limits::default()
}

fn json_err(input: &[u8]) -> ParseError {
    match parse_json(input, &lim()) {
        Ok(v) => panic!("accepted {:?} as {v}", String::from_utf8_lossy(input)),
        Err(e) => e,
    }
}

fn yaml_err(input: &str) -> ParseError {
    match parse_yaml(input.as_bytes(), &lim()) {
        Ok(v) => panic!("accepted {input:?} as {v}"),
        Err(e) => e,
    }
}

#[test]
fn json_duplicates_are_refused_with_their_path() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (input, key, containing path, full field path)
        (r#"{"a":1,"a":2}"#, "a", "", "a"),
        (
            r#"{"privileged":false,"privileged":true}"#,
            "privileged",
            "",
            "privileged",
        ),
        (
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"a"},{"name":"b","securityContext":{"privileged":false,"privileged":true}}]}}}}"#,
            "privileged",
            "spec.template.spec.containers[1].securityContext",
            "spec.template.spec.containers[1].securityContext.privileged",
        ),
        // maps inside arrays inside maps inside arrays
        (
            r#"[{"x":[{"y":{"k":1,"z":2,"k":3}}]}]"#,
            "k",
            "[0].x[0].y",
            "[0].x[0].y.k",
        ),
        // `\u` escapes are decoded before the comparison
        (
            r#"{"securityContext":{"privileged":false,"privil\u0065ged":true}}"#,
            "privileged",
            "securityContext",
            "securityContext.privileged",
        ),
        // keys that are not identifiers are quoted in brackets
        (
            r#"{"metadata":{"labels":{"app.kubernetes.io/name":"a","app.kubernetes.io/name":"b"}}}"#,
            "app.kubernetes.io/name",
            "metadata.labels",
            r#"metadata.labels["app.kubernetes.io/name"]"#,
        ),
    ];
    for (input, key, at, field) in cases {
        let e = json_err(input.as_bytes());
        assert_eq!(
            e,
            ParseError::DuplicateKey {
                key: key.to_string(),
                at: at.to_string(),
                field: field.to_string()
            },
            "{input}"
        );
        assert_eq!(e.field_path(), Some(*field));
    }
}

#[test]
fn duplicate_key_message_reads_like_a_status() {
    let e = json_err(
        br#"{"spec":{"containers":[{"securityContext":{"privileged":false,"privileged":true}}]}}"#,
    );
    assert_eq!(
        e.to_string(),
        r#"duplicate key "privileged" at spec.containers[0].securityContext"#
    );
    let e = json_err(br#"{"kind":"Pod","kind":"Pod"}"#);
    assert_eq!(e.to_string(), r#"duplicate key "kind" at the top level"#);
}

#[test]
fn case_differing_keys_are_distinct() {
    let v = parse_json(br#"{"privileged":false,"Privileged":true}"#, &lim()).unwrap();
    assert_eq!(v, json!({"privileged": false, "Privileged": true}));
}

#[test]
fn depth_bomb_is_refused_without_overflowing_the_stack() {
    let cases: Vec<Vec<u8>> = vec![
        "[".repeat(10_000).into_bytes(),
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        r#"{"a":"#.repeat(10_000).into_bytes(),
        "[".repeat(101).into_bytes(),
    ];
    for input in cases {
        match json_err(&input) {
            ParseError::TooDeep { max: 100, .. } => {}
            other => panic!("{other:?}"),
        }
    }
    // exactly at the limit is fine
    let ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
    assert!(parse_json(ok.as_bytes(), &lim()).is_ok());
    // the path of the breach is reported
    let small = Limits {
        max_depth: 3,
        ..Limits::default()
    };
    assert_eq!(
        parse_json(br#"{"a":{"b":[[1]]}}"#, &small),
        Err(ParseError::TooDeep {
            max: 3,
            path: "a.b[0]".into()
        })
    );
}

#[test]
fn long_strings_and_numbers_are_refused() {
    let l = Limits {
        max_string: 8,
        max_number_digits: 5,
        ..Limits::default()
    };
    assert!(parse_json(br#"{"k":"12345678"}"#, &l).is_ok());
    assert_eq!(
        parse_json(br#"{"k":["123456789"]}"#, &l),
        Err(ParseError::StringTooLong {
            len: 9,
            max: 8,
            path: "k[0]".into()
        })
    );
    // keys too; escapes count after decoding
    assert!(matches!(
        parse_json(br#"{"123456789":1}"#, &l),
        Err(ParseError::StringTooLong { .. })
    ));
    assert!(parse_json(br#"{"k":"\u0041\u0041"}"#, &l).is_ok());
    assert!(parse_json(br#"[12345,-1e30]"#, &l).is_ok());
    assert_eq!(
        parse_json(br#"[1, 123456]"#, &l),
        Err(ParseError::NumberTooLong { max: 5, offset: 4 })
    );
    // digits inside strings are not numbers
    assert!(parse_json(
        br#"["1234567", "a\"12345678"]"#,
        &Limits {
            max_number_digits: 5,
            ..Limits::default()
        }
    )
    .is_ok());
    // default: a 1000-digit number
    let big = format!("[{}]", "9".repeat(1000));
    assert!(matches!(
        json_err(big.as_bytes()),
        ParseError::NumberTooLong { max: 40, offset: 1 }
    ));
    let long_str = format!("[\"{}\"]", "x".repeat(2 * 1024 * 1024));
    assert!(matches!(
        json_err(long_str.as_bytes()),
        ParseError::StringTooLong { .. }
    ));
}

#[test]
fn malformed_json_is_refused() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "empty"),
        (b"  \n\t ", "empty"),
        (br#""\ud800""#, "json"),
        (br#"{"a":"\udc00x"}"#, "json"),
        (br#"{"\ud83d":1}"#, "json"),
        (b"{\"a\":\"\xff\"}", "utf8"),
        (b"{\"a\":\"\xed\xa0\x80\"}", "utf8"), // CESU surrogate bytes
        (br#"{"a":1} x"#, "json"),
        (br#"{"a":1}{"a":1}"#, "json"),
        (br#"{"a":1},"#, "json"),
        (br#"{"a":1,}"#, "json"),
        (br#"{'a':1}"#, "json"),
        (br#"{"a":NaN}"#, "json"),
        (br#"[01]"#, "json"),
        (b"\xef\xbb\xbf{}", "json"), // BOM
        (br#"{"a":1"#, "json"),
    ];
    for (input, want) in cases {
        let e = json_err(input);
        let ok = match *want {
            "empty" => e == ParseError::Empty,
            "utf8" => e == ParseError::InvalidUtf8,
            _ => matches!(e, ParseError::Json(_)),
        };
        assert!(ok, "{:?} → {e:?}", String::from_utf8_lossy(input));
    }
    // a valid surrogate pair is fine
    assert_eq!(
        parse_json(br#""\ud83d\ude00""#, &lim()).unwrap(),
        json!("\u{1F600}")
    );
}

#[test]
fn big_integers_are_not_silently_rounded_into_other_values() {
    // u64 max is exact; beyond that serde_json yields a float, which we keep as such (the
    // canonical bytes are what we judged).
    let v = parse_json(b"[18446744073709551615,-9223372036854775808]", &lim()).unwrap();
    assert_eq!(v, json!([u64::MAX, i64::MIN]));
}

#[test]
fn yaml_alias_bomb_is_refused_instantly() {
    let bomb = r#"
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"#;
    let t = Instant::now();
    let e = yaml_err(bomb);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    assert!(matches!(e, ParseError::Yaml(_)), "{e:?}");
}

#[test]
fn yaml_refusals() {
    let cases: &[(&str, &str)] = &[
        ("a: &x 1\nb: 2\n", "anchor"),
        ("a: &x 1\nb: *x\n", "alias"),
        ("base: &b {x: 1}\nd:\n  <<: *b\n", "merge key with alias"),
        ("d:\n  <<: {privileged: true}\n  x: 1\n", "merge key inline"),
        ("a: 1\n---\nb: 2\n", "two documents"),
        ("---\na: 1\n---\n", "second empty document"),
        ("", "empty"),
        ("# only a comment\n---\n", "empty"),
        ("a: !foo 1\n", "unknown tag"),
        ("a: !!binary /w==\n", "binary, not UTF-8"),
        ("a: .inf\n", "infinity"),
        ("a: .nan\n", "nan"),
        ("a: [1, 2\n", "syntax"),
        ("? [a, b]\n: 1\n", "complex key"),
        ("~: 1\n", "null key"),
        ("a: 1\n b: 2\n", "bad indentation"),
    ];
    for (input, why) in cases {
        let e = yaml_err(input);
        eprintln!("{why}: {e}");
    }
    assert_eq!(
        parse_yaml(b"a: \xff\n", &lim()),
        Err(ParseError::InvalidUtf8)
    );
}

#[test]
fn yaml_duplicates_are_refused_with_their_path() {
    let cases: &[(&str, &str, &str)] = &[
        ("a: 1\na: 2\n", "a", "a"),
        (
            "spec:\n  containers:\n  - name: c\n    securityContext:\n      privileged: false\n      privileged: true\n",
            "privileged",
            "spec.containers[0].securityContext.privileged",
        ),
        ("x: [{k: 1, k: 2}]\n", "k", "x[0].k"),
        // quoted and plain spellings are the same key
        ("a: 1\n'a': 2\n", "a", "a"),
        ("\"privileged\": false\nprivil\\u0065ged: true\n", "", ""),
        // integer keys compare by value, as sigs.k8s.io/yaml would
        ("0x1: a\n1: b\n", "1", "1"),
    ];
    for (input, key, field) in cases {
        match parse_yaml(input.as_bytes(), &lim()) {
            Err(ParseError::DuplicateKey {
                key: k, field: f, ..
            }) => {
                assert_eq!((k.as_str(), f.as_str()), (*key, *field), "{input}");
            }
            Ok(v) if key.is_empty() => {
                // a plain scalar does not process escapes: two different keys
                assert_eq!(v.as_object().map(|m| m.len()), Some(2), "{input}");
            }
            other => panic!("{input}: {other:?}"),
        }
    }
    let dq = "\"privileged\": false\n\"privil\\u0065ged\": true\n";
    assert!(matches!(yaml_err(dq), ParseError::DuplicateKey { .. }));
}

/// Plain scalars resolve as go-yaml v2 (YAML 1.1) resolves them for the API server
/// (sigs.k8s.io/yaml), quoted ones are strings; the divergences the module doc lists are
/// pinned too, so a change in them is seen.
#[test]
fn yaml_scalars_resolve_as_documented() {
    let v = parse_yaml(
        b"t: true\nT: True\nyes_: yes\nY_: Y\non_: on\nON_: ON\nno_: no\noff_: Off\nhex: 0x10\noct: 0o10\nlz: 010\nbin: 0b10\nus: 1_000\nplus: +12\nf: 1.5\nexp: 1e3\neight: 08\ntwo: 2.0\nnull1: ~\nnull2:\nnull3: null\nNULL4: NULL\nq: \"true\"\nsq: 'yes'\nqo: \"010\"\nneg: -3\nstr: 25%\ndate: 2001-12-14\nsexa: 1:20\n",
        &lim(),
    )
    .unwrap();
    assert_eq!(
        v,
        json!({
            "t": true, "T": true, "yes_": true, "Y_": true, "on_": true, "ON_": true,
            "no_": false, "off_": false,
            "hex": 16, "oct": 8, "lz": 8, "bin": 2, "us": 1000, "plus": 12,
            "f": 1.5, "exp": 1000, "eight": 8, "two": 2,
            "null1": null, "null2": null, "null3": null, "NULL4": null,
            "q": "true", "sq": "yes", "qo": "010", "neg": -3, "str": "25%",
            "date": "2001-12-14", "sexa": "1:20"
        })
    );
    // Integral floats are written without a fraction, as Go writes a float64.
    assert_eq!(serde_json::to_string(&v["exp"]).unwrap(), "1000");
    // Keys are spelt as sigs.k8s.io/yaml spells them.
    let keys = parse_yaml(b"on: a\n010: b\nno: c\n", &lim()).unwrap();
    assert_eq!(keys, json!({"true": "a", "8": "b", "false": "c"}));
    // `on` and `true` are one key: a duplicate.
    assert!(matches!(
        parse_yaml(b"on: a\ntrue: b\n", &lim()),
        Err(ParseError::DuplicateKey { .. })
    ));
    // Integral float keys as sigs.k8s.io/yaml spells them; other float keys are refused.
    let keys = parse_yaml(b"08: a\n1e3: b\n", &lim()).unwrap();
    assert_eq!(keys, json!({"8": "a", "1000": "b"}));
    assert!(parse_yaml(b"1.5: a\n", &lim()).is_err());
    // The 64-bit edges: -2^63 is an integer, 2^64 stays a float.
    let edges = parse_yaml(
        b"lo: -9223372036854775808.0\nhi: 18446744073709551616.0\n",
        &lim(),
    )
    .unwrap();
    assert_eq!(
        serde_json::to_string(&edges["lo"]).unwrap(),
        "-9223372036854775808"
    );
    assert!(edges["hi"].is_f64(), "{edges}");
    // A YAML body shaped as JSON is read as the API server reads YAML (`2.0` is 2); a JSON
    // body keeps what it says.
    for ct in ["application/yaml", "application/apply-patch+yaml"] {
        let p = parse_body(ct, br#"{"spec":{"replicas":2.0,"f":0.5}}"#, &lim()).unwrap();
        assert_eq!(
            serde_json::to_string(&p.value).unwrap(),
            r#"{"spec":{"f":0.5,"replicas":2}}"#,
            "{ct}"
        );
    }
    let p = parse_body("application/json", br#"{"replicas":2.0}"#, &lim()).unwrap();
    assert_eq!(
        serde_json::to_string(&p.value).unwrap(),
        r#"{"replicas":2.0}"#
    );
    // The documented divergences from go-yaml v2.
    let d = parse_yaml(b"mixed: yEs\nupper: 0X1F\ntwice: 1__0\n", &lim()).unwrap();
    assert_eq!(d, json!({"mixed": true, "upper": "0X1F", "twice": "1__0"}));
    for refused in [&b"v: .inf\n"[..], b"v: .nan\n", b"v: -.inf\n"] {
        assert!(parse_yaml(refused, &lim()).is_err());
    }
}

/// Runs `f` on a thread with a stack of `kib` KiB (unoptimised builds use far more stack per
/// nesting level than release builds; see the module docs of `yaml`).
fn with_stack<F: FnOnce() + Send + 'static>(kib: usize, f: F) {
    std::thread::Builder::new()
        .stack_size(kib * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn yaml_limits_apply() {
    with_stack(16 * 1024, yaml_limits_apply_inner);
}

fn yaml_limits_apply_inner() {
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(matches!(
        yaml_err(&deep),
        ParseError::TooDeep { .. } | ParseError::Yaml(_)
    ));
    let mut block = String::new();
    for i in 0..200 {
        block.push_str(&" ".repeat(i));
        block.push_str("k:\n");
    }
    assert!(matches!(
        yaml_err(&block),
        ParseError::TooDeep { .. } | ParseError::Yaml(_)
    ));
    let small = Limits {
        max_depth: 2,
        max_string: 4,
        ..Limits::default()
    };
    assert_eq!(
        parse_yaml(b"a:\n  b:\n    c: 1\n", &small),
        Err(ParseError::TooDeep {
            max: 2,
            path: "a.b".into()
        })
    );
    assert_eq!(
        parse_yaml(b"a: [hello]\n", &small),
        Err(ParseError::StringTooLong {
            len: 5,
            max: 4,
            path: "a[0]".into()
        })
    );
}

#[test]
fn deployment_in_json_and_yaml_parse_to_the_same_value() {
    let j = parse_json(DEPLOYMENT_JSON.as_bytes(), &lim()).unwrap();
    let y = parse_yaml(DEPLOYMENT_YAML.as_bytes(), &lim()).unwrap();
    assert_eq!(j, y);
    assert_eq!(
        j.pointer("/spec/template/spec/containers/0/securityContext/privileged"),
        Some(&Value::Bool(false))
    );
    // apply-patch accepts both spellings
    let a = parse_body(
        "application/apply-patch+yaml",
        DEPLOYMENT_JSON.as_bytes(),
        &lim(),
    )
    .unwrap();
    let b = parse_body(
        "application/apply-patch+yaml",
        DEPLOYMENT_YAML.as_bytes(),
        &lim(),
    )
    .unwrap();
    assert_eq!(a.value, j);
    assert_eq!(b.value, j);
    assert_eq!(a.kind, BodyKind::ApplyPatch);
}

#[test]
fn canonical_bytes_round_trip() {
    for input in [
        DEPLOYMENT_JSON.as_bytes(),
        br#"{"b":[1,2.5,-3,"x\u0000\"\\",null,true,{}],"a":{"\u00e9":"\ud83d\ude00"}}"#,
        b"[18446744073709551615,1e300,-0.0]",
    ] {
        let v = parse_json(input, &lim()).unwrap();
        let bytes = canonical_bytes(&v);
        let again = parse_json(&bytes, &lim()).unwrap();
        assert_eq!(again, v);
        assert_eq!(
            canonical_bytes(&again),
            bytes,
            "canonical form is a fixed point"
        );
    }
    // duplicates in YAML never reach the canonical form; keys come out sorted
    let v = parse_yaml(b"b: 1\na: {d: 2, c: 3}\n", &lim()).unwrap();
    assert_eq!(canonical_bytes(&v), br#"{"a":{"c":3,"d":2},"b":1}"#);
}

/// The characters YAML 1.1 reads as line breaks, or refuses raw (DEL, C1 controls, U+FFFE /
/// U+FFFF), go upstream escaped (an apply patch is sent as YAML): the same string to every
/// reader. Other characters, the same lead bytes included (`€` opens with 0xE2, `¥` and
/// U+00A0 with 0xC2, U+FFFD with 0xEF), stay as they are.
#[test]
fn yaml_line_breaks_are_escaped_in_the_canonical_form() {
    let v = serde_json::json!({"a": "x\u{2028}y\u{85}z\u{2029} €¥\u{7f}\u{80}\u{9f}\u{a0}\u{fffe}\u{ffff}\u{fffd}", "k\u{2028}": 1});
    let bytes = canonical_bytes(&v);
    assert_eq!(
        std::str::from_utf8(&bytes).unwrap(),
        "{\"a\":\"x\\u2028y\\u0085z\\u2029 €¥\\u007f\\u0080\\u009f\u{a0}\\ufffe\\uffff\u{fffd}\",\"k\\u2028\":1}"
    );
    assert_eq!(parse_json(&bytes, &lim()).unwrap(), v);
    assert_eq!(canonical_bytes(&parse_json(&bytes, &lim()).unwrap()), bytes);
}

#[test]
fn media_types_dispatch() {
    let obj = br#"{"a":1}"#;
    let cases: &[(&str, Option<BodyKind>)] = &[
        ("application/json", Some(BodyKind::Object)),
        ("Application/JSON; charset=utf-8", Some(BodyKind::Object)),
        (" application/json ;charset=UTF-8", Some(BodyKind::Object)),
        ("application/merge-patch+json", Some(BodyKind::MergePatch)),
        (
            "APPLICATION/STRATEGIC-MERGE-PATCH+JSON",
            Some(BodyKind::StrategicMergePatch),
        ),
        ("application/yaml", Some(BodyKind::Object)),
        (
            "application/apply-patch+yaml; charset=utf-8",
            Some(BodyKind::ApplyPatch),
        ),
        ("application/vnd.kubernetes.protobuf", None),
        ("application/cbor", None),
        ("application/apply-patch+cbor", None),
        ("text/plain", None),
        ("application/x-yaml", None),
        ("", None),
        ("application/json-patch+jsonx", None),
    ];
    for (ct, want) in cases {
        match (parse_body(ct, obj, &lim()), want) {
            (Ok(p), Some(k)) => {
                assert_eq!(p.kind, *k, "{ct}");
                assert_eq!(p.value, json!({"a": 1}));
            }
            (Err(ParseError::UnsupportedMediaType(_)), None) => {}
            (other, _) => panic!("{ct}: {other:?}"),
        }
    }
    let p = parse_body(
        "application/json-patch+json; charset=utf-8",
        br#"[{"op":"add","path":"/a","value":1}]"#,
        &lim(),
    )
    .unwrap();
    assert_eq!(p.kind, BodyKind::JsonPatch);
    // strict parsing applies behind every JSON media type
    for ct in [
        "application/json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/json-patch+json",
    ] {
        assert!(matches!(
            parse_body(ct, br#"{"a":1,"a":2}"#, &lim()),
            Err(ParseError::DuplicateKey { .. })
        ));
    }
}

#[test]
fn json_patch_checks() {
    let op = r#"{"op":"replace","path":"/spec/replicas","value":3}"#;
    let ops = |n: usize| format!("[{}]", vec![op; n].join(","));
    let ct = "application/json-patch+json";
    assert!(parse_body(ct, ops(10_000).as_bytes(), &lim()).is_ok());
    assert_eq!(
        parse_body(ct, ops(10_001).as_bytes(), &lim()),
        Err(ParseError::TooManyPatchOps {
            count: 10_001,
            max: 10_000
        })
    );
    assert!(parse_body(ct, b"[]", &lim()).is_ok());
    let bad: &[(&str, &str)] = &[
        (r#"{"op":"add","path":"/a","value":1}"#, "not array"),
        (r#"[1]"#, "not an object"),
        (r#"[{"path":"/a"}]"#, "missing op"),
        (r#"[{"op":"delete","path":"/a"}]"#, "unknown op"),
        (r#"[{"op":"Add","path":"/a","value":1}]"#, "op case"),
        (r#"[{"op":1,"path":"/a"}]"#, "op type"),
        (r#"[{"op":"remove"}]"#, "missing path"),
        (r#"[{"op":"remove","path":["/a"]}]"#, "path type"),
        (r#"[{"op":"move","path":"/a"}]"#, "move without from"),
        (r#"[{"op":"add","path":"/a"}]"#, "add without value"),
        (
            r#"[{"op":"remove","path":"/a"},{"op":"test","path":"/b"}]"#,
            "second op bad",
        ),
    ];
    for (input, why) in bad {
        let e = parse_body(ct, input.as_bytes(), &lim()).expect_err(why);
        assert!(
            matches!(
                e,
                ParseError::BadPatchOp { .. } | ParseError::JsonPatchNotArray
            ),
            "{why}: {e:?}"
        );
    }
    assert_eq!(
        parse_body(
            ct,
            br#"[{"op":"remove","path":"/a"},{"op":"test","path":"/b"}]"#,
            &lim()
        )
        .unwrap_err()
        .to_string(),
        r#"invalid JSON patch operation [1]: test needs a "value""#
    );
    // null is a value
    assert!(parse_body(
        ct,
        br#"[{"op":"add","path":"/a","value":null},{"op":"copy","from":"/a","path":"/b"}]"#,
        &lim()
    )
    .is_ok());
}

#[test]
fn yaml_media_types_take_json_objects_through_the_json_parser() {
    for ct in ["application/yaml", "application/apply-patch+yaml"] {
        // JSON object: strict JSON checks, same value as YAML would give
        let p = parse_body(ct, br#" {"a":{"b":[1,"x",null]}}"#, &lim()).unwrap();
        assert_eq!(p.value, json!({"a": {"b": [1, "x", null]}}));
        assert!(matches!(
            parse_body(ct, br#"{"a":1,"a":2}"#, &lim()),
            Err(ParseError::DuplicateKey { .. })
        ));
        // a YAML flow mapping is not JSON: falls back to YAML, still strict
        // (`y` is YAML 1.1's `true`, as go-yaml v2 reads it for the API server)
        let p = parse_body(ct, b"{a: 1, b: [x, y]}", &lim()).unwrap();
        assert_eq!(p.value, json!({"a": 1, "b": ["x", true]}));
        assert!(matches!(
            parse_body(ct, b"{a: 1, a: 2}", &lim()),
            Err(ParseError::DuplicateKey { .. })
        ));
        assert!(matches!(
            parse_body(ct, b"{a: &x 1, b: *x}", &lim()),
            Err(ParseError::Yaml(_))
        ));
    }
}
