//! The raw SQLite commit rate on this machine: small write transactions, one after
//! another and from several tasks, through the same driver (sqlx) and pragmas bazaar
//! uses (WAL, `synchronous` NORMAL or FULL). Checkout throughput is bounded by how many
//! transactions the store can commit; this is that ceiling.
//!
//!   sqlite_commits [seconds] [normal|full] [tasks]

use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

#[tokio::main]
async fn main() -> Result<(), sqlx::Error> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let synchronous = match args.next().as_deref() {
        Some("full") => SqliteSynchronous::Full,
        _ => SqliteSynchronous::Normal,
    };
    let tasks: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(4);
    let dir = std::env::temp_dir().join(format!("bazaar-commits-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let options = SqliteConnectOptions::new()
        .filename(dir.join("bench.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(u32::try_from(tasks).unwrap_or(4))
        .connect_with(options)
        .await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        .execute(&pool)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let pool = pool.clone();
        handles.push(tokio::spawn(async move {
            let mut n: u64 = 0;
            while Instant::now() < deadline {
                // A write-first transaction, like bazaar's (takes the lock at once).
                let mut tx = pool.begin().await?;
                sqlx::query("INSERT INTO t (v) VALUES ('x')")
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                n += 1;
            }
            Ok::<u64, sqlx::Error>(n)
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h
            .await
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))??;
    }
    pool.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    #[allow(clippy::cast_precision_loss)]
    let rate = total as f64 / seconds as f64;
    println!(
        "{rate:.0} commits/s ({total} in {seconds} s, {tasks} tasks, synchronous={synchronous:?})"
    );
    Ok(())
}
