//! The same training from every kind of source (CSV, Parquet, JSON lines, SQLite,
//! PostgreSQL, MariaDB), and number categories read alike from every format and API.

use super::*;

/// The bank fixture's rows, typed as a database or Parquet holds them.
struct BankRow {
    age: i64,
    job: String,
    marital: String,
    education: String,
    balance: f64,
    duration: f64,
    campaign: i64,
    y: String,
}

fn bank_rows(env: &Env) -> Vec<BankRow> {
    let (header, rows) = read_csv(&env.data.join("bank.csv"));
    assert_eq!(
        header,
        [
            "age",
            "job",
            "marital",
            "education",
            "balance",
            "duration",
            "campaign",
            "y"
        ]
    );
    rows.iter()
        .map(|r| BankRow {
            age: r[0].parse().unwrap(),
            job: r[1].clone(),
            marital: r[2].clone(),
            education: r[3].clone(),
            balance: r[4].parse().unwrap(),
            duration: r[5].parse().unwrap(),
            campaign: r[6].parse().unwrap(),
            y: r[7].clone(),
        })
        .collect()
}

fn write_bank_parquet(path: &Path, rows: &[BankRow]) {
    use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let ints = |f: fn(&BankRow) -> i64| -> ArrayRef {
        Arc::new(rows.iter().map(|r| Some(f(r))).collect::<Int64Array>())
    };
    let floats = |f: fn(&BankRow) -> f64| -> ArrayRef {
        Arc::new(rows.iter().map(|r| Some(f(r))).collect::<Float64Array>())
    };
    let texts = |f: fn(&BankRow) -> &str| -> ArrayRef {
        Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>())
    };
    let batch = RecordBatch::try_from_iter([
        ("age", ints(|r| r.age)),
        ("job", texts(|r| &r.job)),
        ("marital", texts(|r| &r.marital)),
        ("education", texts(|r| &r.education)),
        ("balance", floats(|r| r.balance)),
        ("duration", floats(|r| r.duration)),
        ("campaign", ints(|r| r.campaign)),
        ("y", texts(|r| &r.y)),
    ])
    .unwrap();
    // Small row groups, so that the source crosses several.
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(300))
        .build();
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn write_bank_jsonl(path: &Path, rows: &[BankRow]) {
    let text: String = rows
        .iter()
        .map(|r| {
            json!({"age": r.age, "job": r.job, "marital": r.marital, "education": r.education,
                   "balance": r.balance, "duration": r.duration, "campaign": r.campaign,
                   "y": r.y})
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(path, text).unwrap();
}

/// Fills a `bank` table on a PostgreSQL or MariaDB server (`$n` or `?` placeholders).
async fn fill_bank_table<DB: sqlx::Database>(
    pool: &sqlx::Pool<DB>,
    rows: &[BankRow],
    insert: &'static str,
) where
    for<'c> &'c mut <DB as sqlx::Database>::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    i64: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
    f64: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
    String: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB>,
{
    let mut tx = pool.begin().await.unwrap();
    for (n, r) in rows.iter().enumerate() {
        sqlx::query(insert)
            .bind(n as i64)
            .bind(r.age)
            .bind(r.job.clone())
            .bind(r.marital.clone())
            .bind(r.education.clone())
            .bind(r.balance)
            .bind(r.duration)
            .bind(r.campaign)
            .bind(r.y.clone())
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

/// Training reads every kind of source the same way: the bank fixture from CSV,
/// Parquet, JSON lines, a PostgreSQL query and a MariaDB query gives the same rows,
/// the same cross-validation table and the same chosen parameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_source_trains_the_same_model() {
    use common::db_servers::{DbKind, DbServer};
    let env = env();
    let rows = bank_rows(&env);
    write_bank_parquet(&env.data.join("bank.parquet"), &rows);
    write_bank_jsonl(&env.data.join("bank.jsonl"), &rows);

    let postgres = tokio::task::spawn_blocking(|| DbServer::start(DbKind::Postgres))
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&postgres.url()).await.unwrap();
    sqlx::query(
        "create table bank (n bigint, age bigint, job text, marital text, education text, \
         balance double precision, duration double precision, campaign bigint, y text)",
    )
    .execute(&pool)
    .await
    .unwrap();
    fill_bank_table(
        &pool,
        &rows,
        "insert into bank values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .await;
    pool.close().await;

    let mariadb = tokio::task::spawn_blocking(|| DbServer::start(DbKind::MariaDb))
        .await
        .unwrap();
    let pool = sqlx::MySqlPool::connect(&mariadb.url()).await.unwrap();
    sqlx::query(
        "create table bank (n bigint, age bigint, job varchar(40), marital varchar(40), \
         education varchar(40), balance double, duration double, campaign bigint, \
         y varchar(8))",
    )
    .execute(&pool)
    .await
    .unwrap();
    fill_bank_table(
        &pool,
        &rows,
        "insert into bank values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .await;
    pool.close().await;

    let server = TestServer::start_with(settings(&env)).await;
    let train = |source: Value| {
        bank_spec(
            source,
            json!({"name": "logistic_regression", "grid": {"C": [0.1, 1.0]}}),
            json!({"folds": 3, "scoring": "accuracy"}),
        )
    };
    let from_csv = succeeded(&server, train(json!({"path": "bank.csv"}))).await;
    assert_eq!(from_csv["rows"], rows.len());
    let means = |result: &Value| -> Vec<f64> {
        result["cv_results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["mean"].as_f64().unwrap())
            .collect()
    };
    // In the file's order: stratified folds without a shuffle are cut in row order.
    let query = "select * from bank order by n";
    let sources = [
        ("parquet", json!({"path": "bank.parquet"})),
        ("json lines", json!({"path": "bank.jsonl"})),
        ("postgresql", json!({"url": postgres.url(), "query": query})),
        ("mariadb", json!({"url": mariadb.url(), "query": query})),
    ];
    for (what, source) in sources {
        let result = succeeded(&server, train(source)).await;
        assert_eq!(result["rows"], from_csv["rows"], "{what}: {result}");
        assert_eq!(
            result["best_params"], from_csv["best_params"],
            "{what}: {result}"
        );
        for (a, b) in means(&result).iter().zip(means(&from_csv)) {
            assert!((a - b).abs() < 1e-9, "{what}: cv mean {a} vs csv's {b}");
        }
    }
    server.stop().await;
}

/// A score job's CSV output as the labels and class probabilities of its rows.
fn scored_rows(path: &Path) -> (Vec<Value>, Vec<Vec<f64>>) {
    let (header, rows) = read_csv(path);
    let label = header.iter().position(|h| h == "label").unwrap();
    let labels = rows.iter().map(|r| json!(r[label])).collect();
    let proba = rows
        .iter()
        .map(|r| {
            header
                .iter()
                .zip(r)
                .filter(|(h, _)| h.starts_with("probabilities_"))
                .map(|(_, v)| v.parse().unwrap())
                .collect()
        })
        .collect();
    (labels, proba)
}

/// A categorical column of numbers has the numbers for categories, as pandas reads
/// it, whatever the format wrote them, and every way of sending a value reaches the
/// same category: trained from a CSV that writes `1.0` (as pandas writes a float
/// column), the simple API's `1.0`, `1`, `"1.0"` and `" 1 "` are one category, and
/// score jobs over JSON lines (floats, and text), a CSV of `1`, and a SQLite `REAL`
/// column answer the job's own predictions. Before, the CSV's categories were its
/// texts (`"1.0"`): a JSON number 1.0 went in as `1`, an unseen category, and
/// answered "no" where the text `"1.0"` answered "yes"; trained from JSON lines, a
/// CSV's `1.0` was unseen; a CSV mixing `1` and `1.0` learned two categories.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn number_categories_are_the_same_from_every_format_and_api() {
    let env = env();
    let server = TestServer::start_with(settings(&env)).await;
    let ks = ["1.0", "2.0", "3.0"];
    let row = |i: usize| {
        let k = i % 3;
        let x = ((i * 7) % 10) as f64 / 10.0;
        let yes = match k {
            0 => i % 9 != 3,
            _ => i.is_multiple_of(11),
        };
        (k, x, if yes { "yes" } else { "no" })
    };
    // The training file (k as pandas writes floats), and the same rows written the
    // other ways: the integers' text, JSON floats, JSON text, a CSV mixing both.
    let (mut csv, mut ints, mut mixed) = (
        String::from("k,x,y\n"),
        String::from("k,x\n"),
        String::from("k,x,y\n"),
    );
    let (mut floats, mut texts) = (String::new(), String::new());
    for i in 0..90 {
        let (k, x, y) = row(i);
        csv.push_str(&format!("{},{x},{y}\n", ks[k]));
        ints.push_str(&format!("{},{x}\n", k + 1));
        let either = if i % 2 == 0 {
            ks[k].to_string()
        } else {
            (k + 1).to_string()
        };
        mixed.push_str(&format!("{either},{x},{y}\n"));
        floats.push_str(&format!(
            "{}\n",
            json!({"k": (k + 1) as f64, "x": x, "y": y})
        ));
        texts.push_str(&format!(
            "{}\n",
            json!({"k": format!(" {} ", ks[k]), "x": x})
        ));
    }
    for (name, text) in [
        ("kfl.csv", &csv),
        ("kfl_ints.csv", &ints),
        ("kfl_mixed.csv", &mixed),
        ("kfl.jsonl", &floats),
        ("kfl_text.jsonl", &texts),
    ] {
        std::fs::write(env.data.join(name), text).unwrap();
    }
    let db = env.data.join("kfl.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", db.display()))
        .await
        .unwrap();
    sqlx::query("create table kfl (k real, x real)")
        .execute(&pool)
        .await
        .unwrap();
    for i in 0..90 {
        let (k, x, _) = row(i);
        sqlx::query("insert into kfl values (?, ?)")
            .bind((k + 1) as f64)
            .bind(x)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    let train = |model: &str, path: &str| {
        json!({"kind": "train", "spec": {
            "model": model, "source": {"path": path},
            "schema": {"label": {"key": "y"}, "features": [{"key": "k"}, {"key": "x"}],
                       "categorical": ["k"]},
            "algorithm": {"name": "logistic_regression"}, "cv": {"folds": 3}}})
    };
    // What training.json records of k: its categories, and that they are numbers.
    let categories = |model: &str| -> (Value, Value) {
        let training: Value = serde_json::from_slice(
            &std::fs::read(env.repo.join(format!("{model}/1/training.json"))).unwrap(),
        )
        .unwrap();
        let k = &training["encodings"].as_array().unwrap()[1];
        assert_eq!(k["key"], "k", "{model}: {k}");
        (k["categories"].clone(), k["numeric"].clone())
    };
    let score = |model: &str, source: Value, sink: &str| {
        json!({"kind": "score", "spec": {"model": model, "source": source,
               "sink": {"path": sink}}})
    };

    let result = succeeded(&server, train("kfl", "kfl.csv")).await;
    // The simple API: a JSON number, an integer, the text as the CSV wrote it, with
    // spaces, all answer as the job's own model did for row 0 (k = 1.0, x = 0).
    let (x0, own) = (row(0).1, &result["sample_predictions"]);
    assert_eq!(own["labels"][0], "yes", "{result}");
    for k in [
        json!(1.0),
        json!(1),
        json!("1.0"),
        json!(" 1 "),
        json!("1e0"),
    ] {
        let (status, got) = server
            .post_json(
                "/predict",
                &json!({"model_id": "kfl", "features": {"k": k, "x": x0}}),
            )
            .await;
        assert_eq!(status, 200, "{k}: {got}");
        assert_eq!(got["prediction"], own["labels"][0], "{k}: {got}");
        for (c, p) in got["probabilities"].as_array().unwrap().iter().enumerate() {
            let own = own["probabilities"][0][c].as_f64().unwrap();
            assert!((p.as_f64().unwrap() - own).abs() < 1e-5, "{k}: {got}");
        }
    }
    // Text that is no number stays an unseen category (all zeros), still an answer.
    let (status, unseen) = server
        .post_json(
            "/predict",
            &json!({"model_id": "kfl", "features": {"k": "abc", "x": x0}}),
        )
        .await;
    assert_eq!(status, 200, "{unseen}");
    assert_ne!(unseen["probabilities"], own["probabilities"][0], "{unseen}");
    // Score jobs over every other way of writing k answer the job's own predictions.
    let db_url = json!({"url": "sqlite://kfl.db", "query": "select k, x from kfl"});
    for (source, sink) in [
        (json!({"path": "kfl.csv"}), "csv.out.csv"),
        (json!({"path": "kfl_ints.csv"}), "ints.out.csv"),
        (json!({"path": "kfl.jsonl"}), "floats.out.csv"),
        (json!({"path": "kfl_text.jsonl"}), "texts.out.csv"),
        (db_url, "sqlite.out.csv"),
    ] {
        let job = finished(
            &server,
            &submit(&server, score("kfl", source.clone(), sink)).await,
        )
        .await;
        assert_eq!(job["state"], "succeeded", "{source}: {job}");
        let (labels, proba) = scored_rows(&env.data.join(sink));
        assert_same_as_job(&result, &labels, &proba);
    }
    assert_eq!(categories("kfl"), (json!(["1", "2", "3"]), json!(true)));

    // The other way round: trained from JSON floats, scoring a CSV of `1.0`.
    let result = succeeded(&server, train("kfl_json", "kfl.jsonl")).await;
    let job = finished(
        &server,
        &submit(
            &server,
            score("kfl_json", json!({"path": "kfl.csv"}), "json.out.csv"),
        )
        .await,
    )
    .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let (labels, proba) = scored_rows(&env.data.join("json.out.csv"));
    assert_same_as_job(&result, &labels, &proba);
    assert_eq!(
        categories("kfl_json"),
        (json!(["1", "2", "3"]), json!(true))
    );

    // A CSV writing `1` in some rows and `1.0` in others: one category each.
    succeeded(&server, train("kfl_mixed", "kfl_mixed.csv")).await;
    assert_eq!(
        categories("kfl_mixed"),
        (json!(["1", "2", "3"]), json!(true))
    );
    server.stop().await;
}
