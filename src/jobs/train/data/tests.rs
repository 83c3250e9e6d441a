use super::super::schema::check_categories;
use super::*;

#[test]
fn ordered_bits_sort_like_the_numbers_and_round_trip() {
    let values = [-3.5f32, -0.0, 0.0, 1.0, 2.5, 1e9];
    for w in values.windows(2) {
        assert!(ordered_bits(w[0]) <= ordered_bits(w[1]), "{w:?}");
    }
    for v in values {
        assert_eq!(from_ordered_bits(ordered_bits(v)), v);
    }
}

fn raw(rows: &[(&str, &str)]) -> RawData {
    RawData {
        rows: rows
            .iter()
            .map(|(y, c)| vec![Value::Text(y.to_string()), Value::Text(c.to_string())])
            .collect(),
        hash: String::new(),
    }
}

fn schema(categories: Option<Vec<String>>) -> Schema {
    Schema {
        label: "y".into(),
        label_map: None,
        features: vec![FeatureSpec {
            key: "c".into(),
            categorical: true,
            categories,
            missing: Missing::Error,
        }],
    }
}

#[test]
fn categories_are_learned_sorted_or_taken_from_the_index_map() {
    let data = raw(&[("1", "b"), ("0", "a"), ("1", "c"), ("0", "b")]);
    let e = encode(&data, &schema(None), 10).unwrap();
    assert_eq!(e.classes, vec![Class::Int(0), Class::Int(1)]);
    assert_eq!(e.width, 3);
    assert_eq!(e.row(0), &[0.0, 1.0, 0.0]);
    // An index map orders the one-hot block; a value outside it is all zeros.
    let e = encode(&data, &schema(Some(vec!["c".into(), "b".into()])), 10).unwrap();
    assert_eq!(e.row(0), &[0.0, 1.0]);
    assert_eq!(e.row(1), &[0.0, 0.0]);
    let JobError::Failed(m) = encode(&data, &schema(None), 2).err().unwrap() else {
        panic!()
    };
    assert!(m.contains("more than 2"), "{m}");
}

/// The categories learned from a column of `cells` (labels alternate 0 and 1),
/// whether they are numbers, and each row's one-hot position.
fn categories(cells: Vec<Value>, given: Option<Vec<String>>) -> (Vec<String>, bool, Vec<i64>) {
    let rows = cells
        .into_iter()
        .enumerate()
        .map(|(i, c)| vec![Value::Int(i as i64 % 2), c])
        .collect();
    let data = RawData {
        rows,
        hash: String::new(),
    };
    let e = encode(&data, &schema(given), 10).unwrap();
    let Encoding::Categorical {
        categories,
        numeric,
        ..
    } = &e.encodings[0]
    else {
        panic!()
    };
    let hot = (0..e.rows())
        .map(|r| {
            e.row(r)
                .iter()
                .position(|v| *v == 1.0)
                .map_or(-1, |p| p as i64)
        })
        .collect();
    (categories.clone(), *numeric, hot)
}

#[test]
fn numbers_are_one_category_whatever_the_format_wrote() {
    use Value::{Float, Int, Text};
    let t = |s: &str| Text(s.into());
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // A CSV's `1.0` (as pandas writes a float column), its `1` beside `1.0`, a
    // JSON float and integer: the categories are the numbers, whole ones as
    // integers (before, the CSV's were its texts, `1` and `1.0` two of them).
    let one_two = strings(&["1", "2"]);
    for cells in [
        vec![t("1.0"), t("2.0"), t("1.0"), t("2.0")],
        vec![t("1"), t(" 2 "), t("1.0"), t("2e0")],
        vec![Float(1.0), Float(2.0), Int(1), Int(2)],
        vec![t("1.0"), Float(2.0), Int(1), t("+2")],
    ] {
        let (c, numeric, hot) = categories(cells.clone(), None);
        assert_eq!((c, numeric), (one_two.clone(), true), "{cells:?}");
        assert_eq!(hot, [0, 1, 0, 1], "{cells:?}");
    }
    // Other numbers in their shortest text; -0 is 0, 1e20 its digits.
    let (c, _, _) = categories(vec![t("0.50"), Float(-0.0), t("1e20"), t("-1.25")], None);
    assert_eq!(c, strings(&["-1.25", "0", "0.5", "100000000000000000000"]));
    // A column with any text is text, every value as written: `01` and `1` are
    // two categories, as pandas keeps an object column's strings.
    let (c, numeric, _) = categories(vec![t("01"), t("1"), t("a"), t("1.0")], None);
    assert_eq!((c, numeric), (strings(&["01", "1", "1.0", "a"]), false));
    let (c, numeric, _) = categories(vec![t("inf"), t("1")], None);
    assert_eq!((c, numeric), (strings(&["1", "inf"]), false));
    // A values map over a column of numbers names them as the column reads them.
    let (c, numeric, hot) = categories(
        vec![t("2"), t("1.0"), Float(3.0), t("2.0")],
        Some(strings(&["2.0", "1", "x"])),
    );
    assert_eq!((c, numeric), (strings(&["2", "1", "x"]), true));
    assert_eq!(hot, [0, 1, -1, 0]);
    let rows = vec![vec![Value::Int(0), t("1")], vec![Value::Int(1), t("2")]];
    let data = RawData {
        rows,
        hash: String::new(),
    };
    let JobError::Failed(m) = encode(&data, &schema(Some(strings(&["1", "1.0"]))), 10)
        .err()
        .unwrap()
    else {
        panic!()
    };
    assert!(
        m.contains("\"1\" and \"1.0\"") && m.contains("same number"),
        "{m}"
    );
}

#[test]
fn a_number_category_is_one_text() {
    let same = ["1", "1.0", " 1.0 ", "01", "+1", "1e0", "1.000"];
    for text in same {
        assert_eq!(text_number_category(text).as_deref(), Some("1"), "{text:?}");
    }
    assert_eq!(float_category(1.0).as_deref(), Some("1"));
    assert_eq!(number_category(&Value::Int(1)).as_deref(), Some("1"));
    assert_eq!(float_category(0.1).as_deref(), Some("0.1"));
    assert_eq!(text_number_category("0.10").as_deref(), Some("0.1"));
    // Integers past 2^53 keep their digits as text and as integers.
    assert_eq!(
        text_number_category("9007199254740993").as_deref(),
        Some("9007199254740993")
    );
    for text in ["abc", "", "NaN", "inf", "1,0", "0x10"] {
        assert_eq!(text_number_category(text), None, "{text:?}");
    }
    assert_eq!(float_category(f64::NAN), None);
    assert_eq!(number_category(&Value::Bool(true)), None);
}

fn labels(cells: Vec<Value>) -> Vec<Class> {
    let rows = cells
        .into_iter()
        .map(|y| vec![y, Value::Text("a".into())])
        .collect();
    let data = RawData {
        rows,
        hash: String::new(),
    };
    encode(&data, &schema(None), 10).unwrap().classes
}

#[test]
fn label_classes_are_numbers_whatever_the_format_and_text_stays_text() {
    use Value::{Float, Int, Text};
    let t = |s: &str| Text(s.into());
    let ints = vec![Class::Int(0), Class::Int(1)];
    // A CSV's "1" and "1.0" are one class, as the floats 1.0 of Parquet are.
    assert_eq!(labels(vec![t("0"), t("1"), t("1.0")]), ints);
    assert_eq!(labels(vec![Float(0.0), Float(1.0), Int(1)]), ints);
    assert_eq!(labels(vec![t(" 0 "), t("1e0"), Float(1.0)]), ints);
    // Numbers that are not all integers: the same texts from any format.
    let halves = vec![Class::Text("0.5".into()), Class::Text("1.0".into())];
    assert_eq!(labels(vec![t("0.5"), t("1"), t("1.0")]), halves);
    assert_eq!(labels(vec![Float(0.5), Int(1), Float(1.0)]), halves);
    // Text labels keep their own words, a number among them too.
    assert_eq!(
        labels(vec![t("a"), t("1.0"), t("01")]),
        vec![
            Class::Text("01".into()),
            Class::Text("1.0".into()),
            Class::Text("a".into())
        ]
    );
    assert_eq!(
        labels(vec![Value::Bool(true), Value::Bool(false)]),
        vec![Class::Text("false".into()), Class::Text("true".into())]
    );
    // Infinity and NaN are no numbers to a label: words, as any other.
    assert_eq!(
        labels(vec![t("inf"), t("1")]),
        vec![Class::Text("1".into()), Class::Text("inf".into())]
    );
}

/// Classes through a label `values` map, or its error, for a label column of
/// `cells` (the feature alternates "a" and "b").
fn mapped_labels(cells: Vec<Value>, map: &[(&str, i64)]) -> Result<Vec<usize>, String> {
    let rows = cells
        .into_iter()
        .enumerate()
        .map(|(i, y)| vec![y, Value::Text(["a", "b"][i % 2].into())])
        .collect();
    let data = RawData {
        rows,
        hash: String::new(),
    };
    let mut s = schema(None);
    s.label_map = Some(
        map.iter()
            .map(|(k, c)| (k.to_string(), Class::Int(*c)))
            .collect(),
    );
    match encode(&data, &s, 10) {
        Ok(e) => Ok(e.y),
        Err(JobError::Failed(m)) => Err(m),
        Err(_) => panic!(),
    }
}

/// A label map over a column of numbers reads its keys as the column's numbers,
/// as a feature's map does: a CSV's `1.0` meets the key "1" as a Parquet float
/// does, and two keys of one number fail the job.
#[test]
fn a_label_map_meets_numbers_whatever_the_format_wrote() {
    use Value::{Float, Int, Text};
    let t = |s: &str| Text(s.into());
    let yes_no = [("1", 1), ("0", 0)];
    for cells in [
        vec![t("1.0"), t("0.0"), t("1.0"), t("0.0")],
        vec![Float(1.0), Float(0.0), Float(1.0), Float(0.0)],
        vec![t("1"), t(" 0 "), Int(1), t("0e0")],
    ] {
        assert_eq!(
            mapped_labels(cells.clone(), &yes_no),
            Ok(vec![1, 0, 1, 0]),
            "{cells:?}"
        );
    }
    // Keys written as floats meet integers too.
    assert_eq!(
        mapped_labels(
            vec![t("1"), t("0"), Int(1), Float(0.0)],
            &[("1.0", 1), ("0.00", 0)]
        ),
        Ok(vec![1, 0, 1, 0])
    );
    // A CSV mixing `1` and `1.0`: one number, so two keys of it are refused
    // rather than splitting the class in two.
    let m = mapped_labels(
        vec![t("1"), t("1.0"), t("2")],
        &[("1", 1), ("1.0", 0), ("2", 2)],
    )
    .unwrap_err();
    assert!(
        m.starts_with("label column \"y\"")
            && m.contains("\"1\" and \"1.0\"")
            && m.contains("same number"),
        "{m}"
    );
    // A column with text keeps each value as written.
    let m = mapped_labels(vec![t("yes"), t("1.0")], &[("yes", 1), ("1", 0)]).unwrap_err();
    assert!(
        m.contains("values not in schema.label.values: \"1.0\""),
        "{m}"
    );
}

/// A number too large for a 32-bit float is named as given, or in short
/// scientific form, not in its 309 digits.
#[test]
fn a_number_past_f32_is_named_in_few_digits() {
    for (cell, shown) in [
        (Value::Text(" 1e308 ".into()), "1e308"),
        (Value::Float(1e308), "1e308"),
        (Value::Float(-3.5e38), "-3.5e38"),
    ] {
        let data = RawData {
            rows: vec![
                vec![Value::Int(0), Value::Float(1.0)],
                vec![Value::Int(1), cell.clone()],
            ],
            hash: String::new(),
        };
        let mut s = schema(None);
        s.features[0].categorical = false;
        let Err(JobError::Failed(m)) = encode(&data, &s, 10) else {
            panic!("{cell:?}")
        };
        assert!(
            m.starts_with(&format!(
                "column \"c\", row 2: {shown} is not a finite 32-bit float"
            )),
            "{m}"
        );
    }
}

#[test]
fn the_design_matrix_is_bounded_before_it_is_allocated() {
    let data = raw(&[("1", "b"), ("0", "a"), ("1", "c"), ("0", "b")]);
    let wide: Vec<String> = (0..1000).map(|i| format!("k{i}")).collect();
    // 4 rows × 1000 columns of 8 bytes: 32,000 bytes.
    assert!(encode_within(&data, &schema(Some(wide.clone())), 10, 32_000).is_ok());
    let JobError::Failed(m) = encode_within(&data, &schema(Some(wide)), 10, 31_999)
        .err()
        .unwrap()
    else {
        panic!()
    };
    assert!(
        m.contains("4 rows × 1000 columns") && m.contains("31.2 KiB"),
        "{m}"
    );
    let m = check_design_size(usize::MAX / 2, 3, MAX_DESIGN_BYTES).unwrap_err();
    assert!(
        m.contains("more than the memory there is") && m.contains("2 GiB"),
        "{m}"
    );
    let m = check_design_size(20_000, 50_002, MAX_DESIGN_BYTES).unwrap_err();
    assert!(m.contains("20000 rows × 50002 columns (7.5 GiB"), "{m}");
}

#[test]
fn a_values_map_over_max_categories_is_refused_naming_the_feature() {
    let mut s = schema(Some(vec!["a".into(), "b".into(), "c".into()]));
    assert!(check_categories(&s, 3).is_ok());
    let m = check_categories(&s, 2).unwrap_err();
    assert!(
        m.starts_with("spec.schema.features[0].values: feature \"c\" has 3 categories")
            && m.contains("--max-categories"),
        "{m}"
    );
    s.features[0].categories = None;
    assert!(check_categories(&s, 0).is_ok());
}

/// Was: a column counted as constant when its deviation was under 1e-12, so a
/// column of values near 1e-13 went unscaled, and a constant column of 1e9 + 0.1
/// whose variance rounding made 1.7e-13 was scaled by 2.4e6. The scales are
/// scikit-learn's StandardScaler's (1 / `scale_`) for the same columns.
#[test]
fn constant_columns_are_told_as_scikit_learn_tells_them() {
    let columns: [(&[f64], f64); 4] = [
        (&[1e-13, 2e-13, 3e-13], 1.0 / 8.16496581e-14),
        (&[1e9 + 0.1, 1e9 + 0.1, 1e9 + 0.1, 1e9 + 0.1 + 1e-6], 1.0),
        (&[0.1; 7], 1.0),
        (&[1.0, 2.0, 3.0], 1.0 / 0.816496580927726),
    ];
    for (values, expected) in columns {
        let data = Encoded {
            encodings: Vec::new(),
            n_numeric: 1,
            width: 1,
            x: values.to_vec(),
            y: vec![0; values.len()],
            classes: Vec::new(),
        };
        let rows: Vec<usize> = (0..values.len()).collect();
        let scale = Scaler::fit(&data, &rows).scale[0];
        let relative = ((scale as f64 - expected) / expected).abs();
        assert!(relative < 1e-6, "{values:?}: {scale} vs {expected}");
    }
}

/// Was: labels beyond an `i64` were read as floats, so neighbours
/// (18446744073709551615 and …614) became one class, and numeric classes that are
/// not all integers were ordered as text (`-1.5` before `-2.5`, `10.5` before
/// `2.5`). Now each integer is its own class, and numbers are ordered by value.
#[test]
fn numeric_labels_are_each_their_own_class_in_the_order_of_their_values() {
    let classes = |labels: &[&str]| {
        let rows: Vec<(&str, &str)> = labels.iter().map(|l| (*l, "a")).collect();
        encode(&raw(&rows), &schema(None), 10).unwrap().classes
    };
    let text = |v: &[&str]| {
        v.iter()
            .map(|s| Class::Text(s.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        classes(&["18446744073709551615", "18446744073709551614", "2", "2"]),
        text(&["2", "18446744073709551614", "18446744073709551615"])
    );
    assert_eq!(
        classes(&["-99999999999999999999", "10", "-3"]),
        text(&["-99999999999999999999", "-3", "10"])
    );
    assert_eq!(
        classes(&["10.5", "2.5", "-1.5", "-2.5", "2"]),
        text(&["-2.5", "-1.5", "2.0", "2.5", "10.5"])
    );
    // Integers within an i64 stay integers; text stays in text order.
    assert_eq!(
        classes(&["10", "2", "-1"]),
        vec![Class::Int(-1), Class::Int(2), Class::Int(10)]
    );
    assert_eq!(classes(&["b10", "b2"]), text(&["b10", "b2"]));
}

/// Was: -0 and 0 were counted as two values, so `most_frequent` imputed 5 for a
/// column of -0, 0, 5, 5 where scikit-learn's SimpleImputer counts two zeros
/// against two fives and takes the smaller, 0.
#[test]
fn most_frequent_counts_minus_zero_as_zero() {
    let cells = [
        Value::Float(-0.0),
        Value::Float(0.0),
        Value::Int(5),
        Value::Int(5),
        Value::Null,
    ];
    let data = RawData {
        rows: cells
            .iter()
            .enumerate()
            .map(|(i, c)| vec![Value::Int(i as i64 % 2), c.clone()])
            .collect(),
        hash: String::new(),
    };
    let mut s = schema(None);
    s.features[0].categorical = false;
    s.features[0].missing = Missing::MostFrequent;
    let e = encode(&data, &s, 10).unwrap();
    let Encoding::Numeric { impute, .. } = &e.encodings[0] else {
        panic!()
    };
    assert_eq!(*impute, Some(0.0));
    assert_eq!(e.row(4), &[0.0]);
}
