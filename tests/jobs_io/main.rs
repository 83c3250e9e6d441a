//! Jobs' data sources and sinks (issue 13): Parquet files, files uploaded with the
//! job (multipart), and MariaDB tables, end to end against a real server on
//! 127.0.0.1:0.

#[path = "../common/mod.rs"]
mod common;

mod databases;
mod files;
mod uploads;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{ArrayRef, Date32Array, Float32Array, Float64Array, RecordBatch, StringArray};
use common::db_servers::{DbKind, DbServer};
use common::jobs::{env, finished, iris_rows, model_answers, settings, submit, wait_for, FEATURES};
use common::{assert_error, TestServer};
use ferroserve::settings::Settings;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use serde_json::{json, Value};
use sqlx::Row;

fn csv_text(rows: &[Vec<f64>]) -> String {
    let mut text = format!("id,{}\n", FEATURES.join(","));
    for (i, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r.iter().map(|v| v.to_string()).collect();
        text.push_str(&format!("id{i},{}\n", cells.join(",")));
    }
    text
}

/// `rows` as Parquet: `id` strings, the first feature as float32 (a type the
/// source widens), the others float64; small row groups, so that the source
/// crosses several.
fn write_parquet(path: &Path, rows: &[Vec<f64>]) {
    let ids: StringArray = (0..rows.len()).map(|i| Some(format!("id{i}"))).collect();
    let mut columns: Vec<(&str, ArrayRef)> = vec![("id", Arc::new(ids))];
    columns.push((
        FEATURES[0],
        Arc::new(rows.iter().map(|r| r[0] as f32).collect::<Float32Array>()),
    ));
    for (j, name) in FEATURES.iter().enumerate().skip(1) {
        columns.push((
            name,
            Arc::new(rows.iter().map(|r| r[j]).collect::<Float64Array>()),
        ));
    }
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(100))
        .build();
    let mut writer =
        ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Every row of a Parquet file: column names, and cells as JSON.
fn read_parquet(path: &Path) -> (Vec<String>, Vec<Vec<Value>>) {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut names = Vec::new();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        names = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        for r in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| match c.data_type() {
                        arrow_schema::DataType::Utf8 => json!(c.as_string::<i32>().value(r)),
                        arrow_schema::DataType::Float64 => {
                            json!(c.as_primitive::<Float64Type>().value(r))
                        }
                        other => panic!("unexpected column type {other}"),
                    })
                    .collect(),
            );
        }
    }
    (names, rows)
}

fn score_spec(source: Value, sink: Value, batch_size: usize) -> Value {
    json!({"kind": "score", "spec": {
        "model": "iris", "version": "latest",
        "source": source, "sink": sink,
        "carry": ["id"], "batch_size": batch_size,
    }})
}

const OUTPUT_COLUMNS: [&str; 5] = [
    "id",
    "predict",
    "predict_proba_setosa",
    "predict_proba_versicolor",
    "predict_proba_virginica",
];

/// Output rows `[id, label, p0, p1, p2]` equal the model's answers, in order.
fn assert_scores(rows: &[Vec<Value>], answers: &[(String, Vec<f64>)]) {
    assert_eq!(rows.len(), answers.len());
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], json!(format!("id{i}")), "row {i}");
        assert_eq!(row[1], json!(answers[i].0), "row {i}");
        for j in 0..3 {
            let got = row[2 + j].as_f64().unwrap();
            assert!((got - answers[i].1[j]).abs() < 1e-9, "row {i}: {row:?}");
        }
    }
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}
