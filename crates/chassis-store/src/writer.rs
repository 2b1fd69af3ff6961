//! One writer thread per SQLite database, committing work in groups (ADR 0019).
//!
//! The thread owns one `rusqlite` connection. Work comes to it as a unit: a closure
//! running a whole transaction's statements against [`Statements`]. The thread takes
//! every unit waiting in its queue, runs them in one `BEGIN IMMEDIATE … COMMIT`, each
//! in a `SAVEPOINT` of its own (a unit that fails is rolled back alone and its caller
//! gets its error; a group that does not commit answers each of its callers with
//! that failure), and answers every caller only once `COMMIT` has returned: a
//! caller learns of its commit exactly when it would on a connection of its own, with
//! the same `synchronous` setting deciding what that commit survives.
//!
//! Units are written against [`Statements`], which a sqlx connection implements too,
//! so a module keeps one version of each query for both backends
//! ([`Store::write`](crate::store::Store::write) picks the path).

use std::borrow::Cow;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::store::SqliteSync;

/// A value bound to a `$N` placeholder. A NULL carries its type: PostgreSQL refuses
/// a text NULL for a `BIGINT` column.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Text(&'a str),
    Int(i64),
    NullText,
    NullInt,
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(text: &'a str) -> Self {
        Arg::Text(text)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(text: &'a String) -> Self {
        Arg::Text(text)
    }
}

impl From<i64> for Arg<'_> {
    fn from(n: i64) -> Self {
        Arg::Int(n)
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(value: Option<&'a str>) -> Self {
        value.map_or(Arg::NullText, Arg::Text)
    }
}

impl<'a> From<Option<&'a String>> for Arg<'a> {
    fn from(value: Option<&'a String>) -> Self {
        value.map_or(Arg::NullText, |text| Arg::Text(text))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(value: Option<i64>) -> Self {
        value.map_or(Arg::NullInt, Arg::Int)
    }
}

/// A column's value as a unit reads it: the types the stores' columns use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

/// One fetched row, its columns by index; the accessors fail (as sqlx's decoding
/// does) on a column that is absent or of another type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn column(&self, index: usize) -> Result<&Value, sqlx::Error> {
        self.0
            .get(index)
            .ok_or_else(|| sqlx::Error::ColumnIndexOutOfBounds {
                index,
                len: self.0.len(),
            })
    }

    fn mismatch(index: usize, expected: &str, found: &Value) -> sqlx::Error {
        sqlx::Error::ColumnDecode {
            index: index.to_string(),
            source: format!("expected {expected}, got {found:?}").into(),
        }
    }

    pub fn int(&self, index: usize) -> Result<i64, sqlx::Error> {
        match self.column(index)? {
            Value::Int(n) => Ok(*n),
            other => Err(Self::mismatch(index, "an integer", other)),
        }
    }

    pub fn opt_int(&self, index: usize) -> Result<Option<i64>, sqlx::Error> {
        match self.column(index)? {
            Value::Null => Ok(None),
            _ => self.int(index).map(Some),
        }
    }

    pub fn text(&self, index: usize) -> Result<String, sqlx::Error> {
        match self.column(index)? {
            Value::Text(text) => Ok(text.clone()),
            other => Err(Self::mismatch(index, "text", other)),
        }
    }

    pub fn opt_text(&self, index: usize) -> Result<Option<String>, sqlx::Error> {
        match self.column(index)? {
            Value::Null => Ok(None),
            _ => self.text(index).map(Some),
        }
    }
}

/// The statements a unit of write work runs, on either backend: the same portable
/// `$N` SQL, bound the same way. Errors are sqlx's, so the stores' error handling
/// ([`is_unique_violation`](crate::store::is_unique_violation),
/// [`is_contended`](crate::store::is_contended) ...) reads both alike.
#[async_trait::async_trait]
pub trait Statements: Send {
    /// Runs one statement; the number of rows it changed.
    async fn run(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, sqlx::Error>;

    /// The first column of the first row, as text; `None` without a row.
    async fn fetch_text(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Option<String>, sqlx::Error>;

    /// Every row, each column as a [`Value`].
    async fn fetch_all(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, sqlx::Error>;

    /// The first row; `None` without one.
    async fn fetch_row(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Option<Row>, sqlx::Error> {
        Ok(self.fetch_all(sql, args).await?.into_iter().next())
    }
}

fn bound<'q>(
    sql: &'q str,
    args: &[Arg<'q>],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    args.iter().fold(sqlx::query(sql), |query, arg| match *arg {
        Arg::Text(text) => query.bind(text),
        Arg::Int(n) => query.bind(n),
        Arg::NullText => query.bind(None::<&str>),
        Arg::NullInt => query.bind(None::<i64>),
    })
}

#[async_trait::async_trait]
impl Statements for sqlx::AnyConnection {
    async fn run(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, sqlx::Error> {
        Ok(bound(sql, args).execute(self).await?.rows_affected())
    }

    async fn fetch_text(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Option<String>, sqlx::Error> {
        use sqlx::Row;
        match bound(sql, args).fetch_optional(self).await? {
            Some(row) => row.try_get::<String, _>(0).map(Some),
            None => Ok(None),
        }
    }

    async fn fetch_all(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, sqlx::Error> {
        let rows = bound(sql, args).fetch_all(self).await?;
        rows.iter()
            .map(|row| {
                (0..sqlx::Row::len(row))
                    .map(|index| any_value(row, index))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Row)
            })
            .collect()
    }
}

/// Column `index` of `row` by the type of its value (not its column's declared one,
/// which SQLite does not enforce).
fn any_value(row: &sqlx::any::AnyRow, index: usize) -> Result<Value, sqlx::Error> {
    use sqlx::any::AnyTypeInfoKind as Kind;
    use sqlx::{Row as _, ValueRef as _};
    let raw = row.try_get_raw(index)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    let kind = raw.type_info().kind();
    Ok(match kind {
        Kind::Bool => Value::Int(i64::from(row.try_get::<bool, _>(index)?)),
        Kind::SmallInt | Kind::Integer | Kind::BigInt => Value::Int(row.try_get(index)?),
        Kind::Text => Value::Text(row.try_get(index)?),
        other => {
            return Err(sqlx::Error::ColumnDecode {
                index: index.to_string(),
                source: format!("unsupported column type: {other:?}").into(),
            });
        }
    })
}

/// The writer thread's connection, as a unit sees it. `&mut` so that it is `Send`
/// (a `rusqlite::Connection` is not `Sync`); it never leaves the thread.
struct SqliteTx<'c> {
    conn: &'c mut Connection,
}

impl SqliteTx<'_> {
    /// The cached statement for `sql` with `args` bound by name (`$1` is the
    /// parameter named `$1`, wherever and however often it appears).
    fn prepare(
        &self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<rusqlite::CachedStatement<'_>, sqlx::Error> {
        self.check(sql)?;
        self.bind(sql, args).map_err(to_sqlx)
    }

    /// Refuses a statement that would run outside the group's transaction: the
    /// transaction is gone (SQLite rolled it back on a full disk, an I/O error, ...;
    /// a statement now would commit on its own), or the statement would end it or
    /// move the unit's savepoint (the group owns both).
    fn check(&self, sql: &str) -> Result<(), sqlx::Error> {
        if self.conn.is_autocommit() {
            return Err(sqlx::Error::Protocol(
                "the group's transaction was rolled back by SQLite".into(),
            ));
        }
        let keyword = leading_keyword(sql);
        if ["BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"]
            .iter()
            .any(|control| keyword.eq_ignore_ascii_case(control))
        {
            return Err(sqlx::Error::Protocol(format!(
                "a unit of write work may not run {keyword}: its group's transaction is the writer's"
            )));
        }
        Ok(())
    }

    fn bind(
        &self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<rusqlite::CachedStatement<'_>, rusqlite::Error> {
        let mut statement = self.conn.prepare_cached(sql)?;
        if statement.parameter_count() != args.len() {
            return Err(rusqlite::Error::InvalidParameterCount(
                args.len(),
                statement.parameter_count(),
            ));
        }
        for (i, arg) in args.iter().enumerate() {
            let name = format!("${}", i + 1);
            let index = statement
                .parameter_index(&name)?
                .ok_or(rusqlite::Error::InvalidParameterName(name))?;
            match *arg {
                Arg::Text(text) => statement.raw_bind_parameter(index, text)?,
                Arg::Int(n) => statement.raw_bind_parameter(index, n)?,
                Arg::NullText | Arg::NullInt => {
                    statement.raw_bind_parameter(index, rusqlite::types::Null)?;
                }
            }
        }
        Ok(statement)
    }
}

#[async_trait::async_trait]
impl Statements for SqliteTx<'_> {
    async fn run(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, sqlx::Error> {
        let changed = self.prepare(sql, args)?.raw_execute().map_err(to_sqlx)?;
        Ok(u64::try_from(changed).unwrap_or(u64::MAX))
    }

    async fn fetch_text(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Option<String>, sqlx::Error> {
        let mut statement = self.prepare(sql, args)?;
        let mut rows = statement.raw_query();
        match rows.next().map_err(to_sqlx)? {
            Some(row) => row.get::<_, String>(0).map(Some).map_err(to_sqlx),
            None => Ok(None),
        }
    }

    async fn fetch_all(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, sqlx::Error> {
        use rusqlite::types::ValueRef;
        let mut statement = self.prepare(sql, args)?;
        let columns = statement.column_count();
        let mut rows = statement.raw_query();
        let mut fetched = Vec::new();
        while let Some(row) = rows.next().map_err(to_sqlx)? {
            let mut values = Vec::with_capacity(columns);
            for index in 0..columns {
                values.push(match row.get_ref(index).map_err(to_sqlx)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => Value::Int(n),
                    ValueRef::Text(text) => Value::Text(
                        std::str::from_utf8(text)
                            .map_err(|e| sqlx::Error::ColumnDecode {
                                index: index.to_string(),
                                source: Box::new(e),
                            })?
                            .to_owned(),
                    ),
                    other => {
                        return Err(sqlx::Error::ColumnDecode {
                            index: index.to_string(),
                            source: format!("unsupported column type: {:?}", other.data_type())
                                .into(),
                        });
                    }
                });
            }
            fetched.push(Row(values));
        }
        Ok(fetched)
    }
}

/// The first word of `sql`, past white space and comments.
fn leading_keyword(sql: &str) -> &str {
    let mut rest = sql;
    loop {
        rest = rest.trim_start();
        if let Some(comment) = rest.strip_prefix("--") {
            rest = comment.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(comment) = rest.strip_prefix("/*") {
            rest = comment.split_once("*/").map_or("", |(_, after)| after);
        } else {
            break;
        }
    }
    let end = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    &rest[..end]
}

/// SQLite's refusal of a statement, carried as sqlx carries its own, so that
/// `DatabaseError::code` (the extended result code, as a number) and `kind` read the
/// same whichever connection ran the statement.
#[derive(Debug, Clone, thiserror::Error)]
#[error("(code: {code}) {message}")]
pub struct SqliteError {
    code: i32,
    message: String,
}

impl sqlx::error::DatabaseError for SqliteError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Owned(self.code.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        use rusqlite::ffi;
        use sqlx::error::ErrorKind;
        // As sqlx's SQLite driver classifies them.
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

/// Why a group did not commit, for each of its callers (an error each).
#[derive(Debug, Clone)]
enum Failure {
    Sqlite(SqliteError),
    Other(String),
}

impl Failure {
    fn to_sqlx(&self) -> sqlx::Error {
        match self {
            Failure::Sqlite(e) => sqlx::Error::Database(Box::new(e.clone())),
            Failure::Other(message) => sqlx::Error::Protocol(message.clone()),
        }
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(error: rusqlite::Error) -> Self {
        match to_sqlx(error) {
            sqlx::Error::Database(db) => match db.try_downcast::<SqliteError>() {
                Ok(e) => Failure::Sqlite(*e),
                Err(db) => Failure::Other(db.to_string()),
            },
            other => Failure::Other(other.to_string()),
        }
    }
}

fn to_sqlx(error: rusqlite::Error) -> sqlx::Error {
    match error {
        rusqlite::Error::SqliteFailure(failure, message) => {
            sqlx::Error::Database(Box::new(SqliteError {
                code: failure.extended_code,
                message: message.unwrap_or_else(|| failure.to_string()),
            }))
        }
        e @ (rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)) => sqlx::Error::Decode(Box::new(e)),
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

/// The future a unit's closure returns, borrowing the connection.
pub type UnitFuture<'c, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>;

/// A unit in the queue: run it inside the group, then answer its caller.
trait Unit: Send {
    /// Runs the work; true when it succeeded (its savepoint is kept).
    fn run(&mut self, conn: &mut Connection) -> bool;
    /// Answers the caller: its own result if the group committed. If it did not, the
    /// group's failure, whatever the unit's own result: a unit sees the rows of the
    /// units before it, now gone, so even its error may rest on them (a key taken by
    /// a claim that was rolled back). Except for `culprit`, the unit whose own error
    /// made SQLite roll the group back: its error stands (a full disk stays one).
    fn answer(self: Box<Self>, failure: Option<&Failure>, culprit: bool);
}

struct Pending<F, T, E> {
    work: Option<F>,
    result: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> Unit for Pending<F, T, E>
where
    F: for<'c> FnOnce(&'c mut dyn Statements) -> UnitFuture<'c, T, E> + Send,
    T: Send,
    E: From<sqlx::Error> + Send,
{
    fn run(&mut self, conn: &mut Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let mut tx = SqliteTx { conn };
        // The statements complete as they are called (this thread runs them), so one
        // poll finishes a unit; one still pending awaited something else.
        let polled = catch_unwind(AssertUnwindSafe(|| {
            let mut future = work(&mut tx);
            future
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
        }));
        let result = match polled {
            Ok(Poll::Ready(result)) => result,
            Ok(Poll::Pending) => Err(E::from(sqlx::Error::Protocol(
                "a unit of write work awaited something other than its statements".into(),
            ))),
            Err(_) => {
                tracing::error!("a unit of write work panicked; its savepoint is rolled back");
                Err(E::from(sqlx::Error::Protocol(
                    "a unit of write work panicked".into(),
                )))
            }
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, failure: Option<&Failure>, culprit: bool) {
        let result = match (self.result, failure) {
            (Some(result), None) => result,
            (Some(Err(e)), Some(_)) if culprit => Err(e),
            (_, Some(failure)) => Err(E::from(failure.to_sqlx())),
            (None, None) => Err(E::from(sqlx::Error::PoolClosed)),
        };
        // The caller may have gone (its request timed out): the work stands.
        let _ = self.reply.send(result);
    }
}

enum Message {
    Unit(Box<dyn Unit>),
    Stop,
}

/// Units waiting beyond this make their callers wait to queue (as a pool makes them
/// wait for a connection).
const QUEUE: usize = 1024;

/// At most this many units share a commit: a group's callers wait for its last unit.
const MAX_GROUP: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the database")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database's journal_mode is {0}, not wal")]
    NotWal(String),
    #[error("synchronous = {wanted} did not take (it reads {found})")]
    Synchronous { wanted: &'static str, found: i64 },
    #[error("cannot start the writer thread")]
    Thread(#[source] std::io::Error),
}

/// The writer of one SQLite file. Dropping every handle stops the thread once the
/// queue is empty; [`SqliteWriter::close`] does it explicitly and waits.
#[derive(Debug)]
pub struct SqliteWriter {
    queue: mpsc::Sender<Message>,
    /// How long a caller waits for room in the queue, as it would for a pooled
    /// connection.
    queue_timeout: Duration,
    thread: Mutex<Option<JoinHandle<()>>>,
    commits: Arc<AtomicU64>,
}

impl SqliteWriter {
    /// Opens `path` (which must exist: the store's pool creates it) with the pool's
    /// pragmas and starts the thread.
    pub fn open(
        path: &Path,
        name: &str,
        synchronous: SqliteSync,
        busy_timeout: Duration,
    ) -> Result<Self, OpenError> {
        let settings = Settings {
            path: path.to_owned(),
            name: name.to_owned(),
            synchronous,
            busy_timeout,
        };
        let conn = settings.connect()?;
        let (queue, receiver) = mpsc::channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&commits);
        let thread = std::thread::Builder::new()
            .name(format!("sqlite-writer-{name}"))
            .spawn(move || serve(Writer { conn, settings }, receiver, &counted))
            .map_err(OpenError::Thread)?;
        Ok(Self {
            queue,
            queue_timeout: busy_timeout,
            thread: Mutex::new(Some(thread)),
            commits,
        })
    }

    /// False once the thread has stopped (closed, or it died): units are refused.
    pub fn is_alive(&self) -> bool {
        !self.queue.is_closed()
    }

    /// Units waiting in the queue (tests use it to know a group's makeup).
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// The groups committed so far (each one `COMMIT`, however many units).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `work` in the writer's next group and answers once that group committed
    /// (or with the error that stopped the unit or the commit). `PoolClosed` if the
    /// writer was closed before the unit was queued, `PoolTimedOut` if the queue
    /// stayed full for the busy timeout: either way nothing ran.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: for<'c> FnOnce(&'c mut dyn Statements) -> UnitFuture<'c, T, E> + Send + 'static,
        T: Send + 'static,
        E: From<sqlx::Error> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let unit = Box::new(Pending {
            work: Some(work),
            result: None,
            reply,
        });
        tokio::time::timeout(self.queue_timeout, self.queue.send(Message::Unit(unit)))
            .await
            .map_err(|_| E::from(sqlx::Error::PoolTimedOut))?
            .map_err(|_| E::from(sqlx::Error::PoolClosed))?;
        // Not bounded: once queued the unit may run and commit at any moment, so a
        // caller that stopped waiting could not tell what happened to it.
        // Dropped unanswered only if the thread died: no COMMIT followed the unit.
        answer
            .await
            .map_err(|_| E::from(sqlx::Error::WorkerCrashed))?
    }

    /// Stops the writer: the units already queued run and commit, later ones are
    /// refused (`PoolClosed`). Waits for the thread.
    pub async fn close(&self) {
        let _ = self.queue.send(Message::Stop).await;
        let thread = match self.thread.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// What the writer's connection is opened with, kept to open it again.
struct Settings {
    path: PathBuf,
    name: String,
    synchronous: SqliteSync,
    busy_timeout: Duration,
}

impl Settings {
    /// Opens the file with the pool's pragmas.
    fn connect(&self) -> Result<Connection, OpenError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OpenError::NotWal(mode));
        }
        conn.pragma_update(None, "synchronous", self.synchronous.pragma())?;
        // SQLite ignores a value it does not take without a word: read it back.
        let found: i64 = conn.query_row("PRAGMA synchronous", [], |row| row.get(0))?;
        if found != self.synchronous.code() {
            return Err(OpenError::Synchronous {
                wanted: self.synchronous.pragma(),
                found,
            });
        }
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }
}

/// The thread's connection and how to open it again.
struct Writer {
    conn: Connection,
    settings: Settings,
}

impl Writer {
    /// Makes sure the connection is outside any transaction before a group begins
    /// (a ROLLBACK after a failed group may itself have failed): rolls back, and if
    /// that does not do it, opens the connection again.
    fn ensure_clean(&mut self) -> Result<(), Failure> {
        if self.conn.is_autocommit() {
            return Ok(());
        }
        tracing::error!(
            writer = %self.settings.name,
            "the writer's connection is still in a transaction; rolling it back"
        );
        if let Err(error) = self.conn.execute_batch("ROLLBACK") {
            tracing::error!(writer = %self.settings.name, %error, "ROLLBACK failed");
        }
        if self.conn.is_autocommit() {
            return Ok(());
        }
        tracing::error!(
            writer = %self.settings.name,
            "the writer's connection is still in a transaction; opening it again"
        );
        // The old connection, dropped, closes and so rolls back.
        self.conn = self.settings.connect().map_err(|error| {
            tracing::error!(writer = %self.settings.name, %error, "cannot reopen the writer's connection");
            Failure::Other(format!("cannot reopen the writer's connection: {error}"))
        })?;
        Ok(())
    }
}

fn serve(mut writer: Writer, mut receiver: mpsc::Receiver<Message>, commits: &AtomicU64) {
    let mut group: Vec<Box<dyn Unit>> = Vec::new();
    // `None`: closed and empty, or every handle dropped.
    while let Some(first) = receiver.blocking_recv() {
        take(first, &mut group, &mut receiver);
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(message) => take(message, &mut group, &mut receiver),
                Err(_) => break,
            }
        }
        if !group.is_empty() && commit_group(&mut writer, &mut group) {
            commits.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn take(message: Message, group: &mut Vec<Box<dyn Unit>>, receiver: &mut mpsc::Receiver<Message>) {
    match message {
        Message::Unit(unit) => group.push(unit),
        // Whatever is queued still runs; senders from now on are refused.
        Message::Stop => receiver.close(),
    }
}

/// Why a group did not commit, and which unit's own error caused it (SQLite rolled
/// the transaction back on it), if one did.
struct GroupFailure {
    failure: Failure,
    culprit: Option<usize>,
}

impl From<rusqlite::Error> for GroupFailure {
    fn from(error: rusqlite::Error) -> Self {
        Self {
            failure: error.into(),
            culprit: None,
        }
    }
}

/// Runs `group` in one transaction, each unit in its savepoint, and answers each;
/// true when it committed.
fn commit_group(writer: &mut Writer, group: &mut Vec<Box<dyn Unit>>) -> bool {
    let failed = run_group(writer, group).err();
    if let Some(failed) = &failed {
        tracing::warn!(
            writer = %writer.settings.name,
            units = group.len(),
            error = %failed.failure.to_sqlx(),
            "a group of write work did not commit"
        );
        if !writer.conn.is_autocommit() {
            // Nothing of the group may stay; if this fails, the next group's
            // `ensure_clean` sees it.
            let _ = writer.conn.execute_batch("ROLLBACK");
        }
    }
    for (i, unit) in group.drain(..).enumerate() {
        match &failed {
            None => unit.answer(None, false),
            Some(failed) => unit.answer(Some(&failed.failure), failed.culprit == Some(i)),
        }
    }
    failed.is_none()
}

fn run_group(writer: &mut Writer, group: &mut [Box<dyn Unit>]) -> Result<(), GroupFailure> {
    writer.ensure_clean().map_err(|failure| GroupFailure {
        failure,
        culprit: None,
    })?;
    let conn = &mut writer.conn;
    conn.execute_batch("BEGIN IMMEDIATE")?;
    for (i, unit) in group.iter_mut().enumerate() {
        conn.execute_batch("SAVEPOINT unit")?;
        let ok = unit.run(conn);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back on the unit's error (a full
            // disk, an I/O error, an interrupt): the units before it are gone too.
            return Err(GroupFailure {
                failure: Failure::Other("the group's transaction was rolled back by SQLite".into()),
                culprit: Some(i),
            });
        }
        if !ok {
            conn.execute_batch("ROLLBACK TO unit")?;
        }
        conn.execute_batch("RELEASE unit")?;
    }
    conn.execute_batch("COMMIT")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::{Store, is_contended, is_unique_violation};

    const BUSY: Duration = Duration::from_secs(5);

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path(), "w", 2, SqliteSync::Normal)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT, note TEXT)")
            .execute(store.pool())
            .await
            .unwrap();
        (dir, store)
    }

    async fn insert(store: &Store, id: String, n: i64) -> Result<u64, sqlx::Error> {
        store
            .write(move |tx| {
                Box::pin(async move {
                    tx.run(
                        "INSERT INTO t (id, n, note) VALUES ($1, $2, $3)",
                        &[Arg::from(&id), n.into(), Arg::NullText],
                    )
                    .await
                })
            })
            .await
    }

    async fn count(store: &Store) -> i64 {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM t")
            .fetch_one(store.pool())
            .await
            .unwrap();
        n
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_units_all_commit_and_are_visible_when_answered() {
        let (_dir, store) = store().await;
        let store = Arc::new(store);
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    insert(&store, format!("k{i}"), i).await.unwrap();
                    // Answered after COMMIT: another connection sees it at once.
                    let seen: Option<(i64,)> = sqlx::query_as("SELECT n FROM t WHERE id = $1")
                        .bind(format!("k{i}"))
                        .fetch_optional(store.pool())
                        .await
                        .unwrap();
                    assert_eq!(seen, Some((i,)));
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(count(&store).await, 200);
        // Units that waited while a group ran shared the next group's commit.
        let commits = store.writer_commits().unwrap();
        assert!(commits < 200, "{commits} commits for 200 units");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failing_unit_rolls_back_alone() {
        let (_dir, store) = store().await;
        insert(&store, "taken".into(), 0).await.unwrap();
        let store = Arc::new(store);
        // Holding the write lock keeps the writer's first group waiting to begin, so
        // the others queue behind it and share groups.
        let mut holder = store.pool().acquire().await.unwrap();
        sqlx::Executor::execute(&mut *holder, "BEGIN IMMEDIATE")
            .await
            .unwrap();
        // Half the units write a row and then hit the taken key: each of those must
        // leave nothing; the others commit, however the groups fall.
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let id = format!("k{i}");
                    let result: Result<(), sqlx::Error> = store
                        .write(move |tx| {
                            Box::pin(async move {
                                tx.run(
                                    "INSERT INTO t (id, n) VALUES ($1, $2)",
                                    &[Arg::from(&id), i.into()],
                                )
                                .await?;
                                if i % 2 == 1 {
                                    tx.run(
                                        "INSERT INTO t (id, n) VALUES ($1, $2)",
                                        &["taken".into(), i.into()],
                                    )
                                    .await?;
                                }
                                Ok(())
                            })
                        })
                        .await;
                    (i, result)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        sqlx::Executor::execute(&mut *holder, "ROLLBACK")
            .await
            .unwrap();
        drop(holder);
        for task in tasks {
            let (i, result) = task.await.unwrap();
            if i % 2 == 1 {
                assert!(is_unique_violation(&result.unwrap_err()), "unit {i}");
            } else {
                result.unwrap();
            }
        }
        assert_eq!(count(&store).await, 51);
        let odd: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM t WHERE n % 2 = 1")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(odd.0, 0);
        // One commit for "taken"; the 100 units shared far fewer.
        let commits = store.writer_commits().unwrap();
        assert!(commits <= 11, "{commits} commits for 101 units");
    }

    async fn bind_by_name_and_read_back(store: &Store) {
        let note: Option<String> = store
            .write(|tx| {
                Box::pin(async move {
                    // $2 before $1, and $1 twice: bound by name, not by position.
                    tx.run(
                        "INSERT INTO t (id, n, note) VALUES ($2, 7, $1 || $1)",
                        &["ab".into(), "x".into()],
                    )
                    .await?;
                    let changed = tx
                        .run(
                            "INSERT INTO t (id, n) VALUES ($1, 1) ON CONFLICT (id) DO NOTHING",
                            &["x".into()],
                        )
                        .await?;
                    assert_eq!(changed, 0);
                    let missing = tx
                        .fetch_text("SELECT note FROM t WHERE id = $1", &["nope".into()])
                        .await?;
                    assert_eq!(missing, None);
                    tx.fetch_text("SELECT note FROM t WHERE id = $1", &["x".into()])
                        .await
                })
            })
            .await
            .unwrap();
        assert_eq!(note.as_deref(), Some("abab"));
        // Typed NULLs: PostgreSQL refuses a text NULL for the BIGINT column.
        store
            .write(|tx| {
                Box::pin(async move {
                    tx.run(
                        "INSERT INTO t (id, n, note) VALUES ($1, $2, $3)",
                        &["nulls".into(), None::<i64>.into(), None::<&str>.into()],
                    )
                    .await
                })
            })
            .await
            .unwrap();
        let (n, note): (Option<i64>, Option<String>) =
            sqlx::query_as("SELECT n, note FROM t WHERE id = 'nulls'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!((n, note), (None, None));
        // Rows come back typed, NULLs as NULLs, on either backend.
        let rows = store
            .write(|tx| {
                Box::pin(async move {
                    let rows = tx
                        .fetch_all("SELECT id, n, note FROM t ORDER BY id", &[])
                        .await?;
                    let none = tx
                        .fetch_row("SELECT id FROM t WHERE id = $1", &["nope".into()])
                        .await?;
                    assert_eq!(none, None);
                    Ok::<_, sqlx::Error>(rows)
                })
            })
            .await
            .unwrap();
        assert_eq!(
            rows,
            [
                Row(vec![Value::Text("nulls".into()), Value::Null, Value::Null]),
                Row(vec![
                    Value::Text("x".into()),
                    Value::Int(7),
                    Value::Text("abab".into())
                ]),
            ]
        );
        assert_eq!(rows[1].int(1).unwrap(), 7);
        assert_eq!(rows[1].text(2).unwrap(), "abab");
        assert_eq!(rows[0].opt_int(1).unwrap(), None);
        assert_eq!(rows[0].opt_text(2).unwrap(), None);
        assert!(rows[1].int(0).is_err());
        assert!(rows[1].text(3).is_err());
        sqlx::query("DELETE FROM t WHERE id = 'nulls'")
            .execute(store.pool())
            .await
            .unwrap();
        // Too few arguments is an error, not a NULL.
        let err = store
            .write(|tx| {
                Box::pin(async move {
                    tx.run("INSERT INTO t (id, n) VALUES ($1, $2)", &["y".into()])
                        .await
                })
            })
            .await
            .unwrap_err();
        assert!(!is_unique_violation(&err), "{err}");
        assert_eq!(count(store).await, 1);
        // A failing unit leaves nothing.
        let err = store
            .write(|tx| {
                Box::pin(async move {
                    tx.run("INSERT INTO t (id, n) VALUES ($1, 2)", &["z".into()])
                        .await?;
                    tx.run("INSERT INTO t (id, n) VALUES ($1, 3)", &["x".into()])
                        .await
                })
            })
            .await
            .unwrap_err();
        assert!(is_unique_violation(&err), "{err}");
        assert_eq!(count(store).await, 1);
    }

    #[tokio::test]
    async fn statements_bind_by_name_and_read_back_on_both_backends() {
        let (_dir, store) = store().await;
        bind_by_name_and_read_back(&store).await;
        let Some(url) = testkit::postgres::url("writer_statements_on_postgres") else {
            return;
        };
        // On PostgreSQL a unit is a transaction of the pool's: the same statements.
        let schema = testkit::postgres::TestSchema::new(&url, "writer");
        let store = Store::open_postgres_in(&url, "w", &schema.name, 2)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT, note TEXT)")
            .execute(store.pool())
            .await
            .unwrap();
        bind_by_name_and_read_back(&store).await;
        store.close().await;
    }

    fn open_writer(dir: &tempfile::TempDir, busy_timeout: Duration) -> Arc<SqliteWriter> {
        Arc::new(
            SqliteWriter::open(
                &dir.path().join("w.db"),
                "w",
                SqliteSync::Normal,
                busy_timeout,
            )
            .unwrap(),
        )
    }

    /// Runs a unit that holds the writer thread until the returned sender sends (or
    /// is dropped): the units queued meanwhile make up its next group, exactly.
    async fn occupy(
        writer: &Arc<SqliteWriter>,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<(), sqlx::Error>>,
    ) {
        let (started, has_started) = std::sync::mpsc::channel();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let writer = Arc::clone(writer);
        let task = tokio::spawn(async move {
            writer
                .run(move |_tx| {
                    Box::pin(async move {
                        let _ = started.send(());
                        let _ = wait.recv();
                        Ok(())
                    })
                })
                .await
        });
        tokio::task::spawn_blocking(move || has_started.recv())
            .await
            .unwrap()
            .unwrap();
        (go, task)
    }

    async fn wait_queued(writer: &SqliteWriter, n: usize) {
        while writer.queued() < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Queues `work` behind the units already queued (in this order).
    async fn queue<T, F>(
        writer: &Arc<SqliteWriter>,
        work: F,
    ) -> tokio::task::JoinHandle<Result<T, sqlx::Error>>
    where
        F: for<'c> FnOnce(&'c mut dyn Statements) -> UnitFuture<'c, T, sqlx::Error>
            + Send
            + 'static,
        T: Send + 'static,
    {
        let before = writer.queued();
        let runner = Arc::clone(writer);
        let task = tokio::spawn(async move { runner.run(work).await });
        wait_queued(writer, before + 1).await;
        task
    }

    fn insert_unit(
        id: String,
    ) -> impl for<'c> FnOnce(&'c mut dyn Statements) -> UnitFuture<'c, u64, sqlx::Error> + Send + 'static
    {
        statement_unit("INSERT INTO t (id, n) VALUES ($1, 0)", id)
    }

    /// A unit running `sql` with `arg` for `$1`.
    fn statement_unit(
        sql: &'static str,
        arg: String,
    ) -> impl for<'c> FnOnce(&'c mut dyn Statements) -> UnitFuture<'c, u64, sqlx::Error> + Send + 'static
    {
        move |tx| Box::pin(async move { tx.run(sql, &[Arg::from(&arg)]).await })
    }

    #[tokio::test]
    async fn a_closed_writer_finishes_its_queue_and_refuses_the_rest() {
        let (dir, store) = store().await;
        let writer = open_writer(&dir, BUSY);
        let (go, occupied) = occupy(&writer).await;
        let mut queued = Vec::new();
        for i in 0..20 {
            queued.push(queue(&writer, insert_unit(format!("k{i}"))).await);
        }
        // Stop comes behind the 20 units.
        let closing = {
            let writer = Arc::clone(&writer);
            tokio::spawn(async move { writer.close().await })
        };
        wait_queued(&writer, 21).await;
        go.send(()).unwrap();
        closing.await.unwrap();
        occupied.await.unwrap().unwrap();
        for task in queued {
            assert_eq!(task.await.unwrap().unwrap(), 1);
        }
        let err = writer.run(insert_unit("late".into())).await.unwrap_err();
        assert!(matches!(err, sqlx::Error::PoolClosed), "{err}");
        assert!(!writer.is_alive());
        assert_eq!(count(&store).await, 20);
    }

    /// A group whose COMMIT fails answers each of its callers with that failure,
    /// even one whose own error came from another unit's rows, now gone.
    #[tokio::test]
    async fn a_failed_commit_fails_every_unit_of_the_group() {
        let (dir, store) = store().await;
        sqlx::raw_sql(
            "CREATE TABLE p (id TEXT PRIMARY KEY); \
             CREATE TABLE c (pid TEXT REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED)",
        )
        .execute(store.pool())
        .await
        .unwrap();
        let writer = open_writer(&dir, BUSY);
        let (go, occupied) = occupy(&writer).await;
        let claim = |id: &str| statement_unit("INSERT INTO p (id) VALUES ($1)", id.into());
        let first = queue(&writer, claim("a")).await;
        // Sees the first unit's row: a unique violation, which the rollback makes untrue.
        let second = queue(&writer, claim("a")).await;
        let orphan = queue(
            &writer,
            statement_unit("INSERT INTO c (pid) VALUES ($1)", "nope".into()),
        )
        .await;
        go.send(()).unwrap();
        occupied.await.unwrap().unwrap();
        for (name, task) in [("first", first), ("second", second), ("orphan", orphan)] {
            let err = task.await.unwrap().unwrap_err();
            let sqlx::Error::Database(db) = &err else {
                panic!("{name}: {err}");
            };
            assert_eq!(
                db.kind(),
                sqlx::error::ErrorKind::ForeignKeyViolation,
                "{name}: {err}"
            );
        }
        let (rows,): (i64,) =
            sqlx::query_as("SELECT (SELECT COUNT(*) FROM p) + (SELECT COUNT(*) FROM c)")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(rows, 0);
        // The writer goes on.
        writer.run(claim("b")).await.unwrap();
        writer.close().await;
    }

    /// A full disk makes SQLite roll the whole transaction back: the unit that hit it
    /// keeps its error, the others of its group get the group's failure, and a
    /// statement after the rollback is refused rather than committed on its own.
    #[tokio::test]
    async fn a_transaction_rolled_back_by_sqlite_fails_the_group() {
        let (dir, store) = store().await;
        let writer = open_writer(&dir, BUSY);
        let (go, occupied) = occupy(&writer).await;
        let before = queue(&writer, insert_unit("before".into())).await;
        let full = queue::<(), _>(&writer, |tx| {
            Box::pin(async move {
                // Caps the file at its current size; the pragma's row makes `run` an
                // error, but the cap is set.
                let _ = tx.run("PRAGMA max_page_count = 1", &[]).await;
                let full = tx
                    .run(
                        "INSERT INTO t (id, n, note) VALUES ($1, 0, hex(zeroblob(100000)))",
                        &["big".into()],
                    )
                    .await
                    .unwrap_err();
                // The transaction is gone: this must not commit on its own.
                match tx
                    .run("INSERT INTO t (id, n) VALUES ($1, 0)", &["stray".into()])
                    .await
                {
                    Err(_) => Err(full),
                    Ok(_) => Ok(()),
                }
            })
        })
        .await;
        let after = queue(&writer, insert_unit("after".into())).await;
        go.send(()).unwrap();
        occupied.await.unwrap().unwrap();
        let err = full.await.unwrap().unwrap_err();
        let sqlx::Error::Database(db) = &err else {
            panic!("{err}");
        };
        assert_eq!(db.code().as_deref(), Some("13"), "SQLITE_FULL: {err}");
        for (name, task) in [("before", before), ("after", after)] {
            let err = task.await.unwrap().unwrap_err();
            assert!(err.to_string().contains("rolled back"), "{name}: {err}");
        }
        assert_eq!(count(&store).await, 0);
        // The writer goes on once the file may grow again.
        writer
            .run(|tx| {
                Box::pin(async move {
                    let _ = tx.run("PRAGMA max_page_count = 1000000", &[]).await;
                    tx.run("INSERT INTO t (id, n) VALUES ($1, 0)", &["later".into()])
                        .await
                })
            })
            .await
            .unwrap();
        assert_eq!(count(&store).await, 1);
        writer.close().await;
    }

    #[tokio::test]
    async fn a_panicking_unit_fails_alone() {
        let (dir, store) = store().await;
        let writer = open_writer(&dir, BUSY);
        let (go, occupied) = occupy(&writer).await;
        let before = queue(&writer, insert_unit("before".into())).await;
        let panics = queue::<u64, _>(&writer, |tx| {
            Box::pin(async move {
                tx.run("INSERT INTO t (id, n) VALUES ($1, 0)", &["panics".into()])
                    .await?;
                panic!("a unit's bug");
            })
        })
        .await;
        let after = queue(&writer, insert_unit("after".into())).await;
        go.send(()).unwrap();
        occupied.await.unwrap().unwrap();
        assert_eq!(before.await.unwrap().unwrap(), 1);
        let err: sqlx::Error = panics.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
        assert_eq!(after.await.unwrap().unwrap(), 1);
        writer.run(insert_unit("later".into())).await.unwrap();
        assert_eq!(count(&store).await, 3);
        writer.close().await;
    }

    /// The transaction is the group's: a unit may not end it or touch its savepoint.
    #[tokio::test]
    async fn a_unit_cannot_end_its_groups_transaction() {
        let (dir, store) = store().await;
        let writer = open_writer(&dir, BUSY);
        for control in [
            "COMMIT",
            "  -- a comment\n rollback",
            "/* c */ END",
            "RELEASE unit",
            "ROLLBACK TO unit",
            "SAVEPOINT mine",
            "BEGIN",
        ] {
            let err = writer
                .run::<(), sqlx::Error, _>(move |tx| {
                    Box::pin(async move {
                        tx.run("INSERT INTO t (id, n) VALUES ($1, 0)", &["x".into()])
                            .await?;
                        tx.run(control, &[]).await?;
                        Err(sqlx::Error::RowNotFound)
                    })
                })
                .await
                .unwrap_err();
            assert!(matches!(err, sqlx::Error::Protocol(_)), "{control}: {err}");
            assert_eq!(count(&store).await, 0, "{control}");
        }
        writer.run(insert_unit("x".into())).await.unwrap();
        assert_eq!(count(&store).await, 1);
        writer.close().await;
    }

    /// A full queue makes a caller wait as long as a pool would for a connection,
    /// then refuses it with nothing run.
    #[tokio::test]
    async fn a_full_queue_times_out() {
        let (dir, store) = store().await;
        let writer = open_writer(&dir, Duration::from_millis(50));
        let (go, occupied) = occupy(&writer).await;
        let queued: Vec<_> = (0..QUEUE)
            .map(|i| {
                let writer = Arc::clone(&writer);
                tokio::spawn(async move { writer.run(insert_unit(format!("k{i}"))).await })
            })
            .collect();
        wait_queued(&writer, QUEUE).await;
        let err = tokio::time::timeout(
            Duration::from_secs(5),
            writer.run(insert_unit("late".into())),
        )
        .await
        .expect("the send is bounded")
        .unwrap_err();
        assert!(matches!(err, sqlx::Error::PoolTimedOut), "{err}");
        assert!(crate::store::is_never_started(&err));
        go.send(()).unwrap();
        occupied.await.unwrap().unwrap();
        for task in queued {
            task.await.unwrap().unwrap();
        }
        assert_eq!(count(&store).await, i64::try_from(QUEUE).unwrap());
        writer.close().await;
    }

    /// A connection left inside a transaction (a failed ROLLBACK) is rolled back
    /// before the next group begins.
    #[tokio::test]
    async fn a_group_starts_outside_any_transaction() {
        let (dir, store) = store().await;
        let settings = Settings {
            path: dir.path().join("w.db"),
            name: "w".into(),
            synchronous: SqliteSync::Normal,
            busy_timeout: BUSY,
        };
        let conn = settings.connect().unwrap();
        conn.execute_batch("BEGIN; INSERT INTO t (id, n) VALUES ('stale', 0)")
            .unwrap();
        let mut writer = Writer { conn, settings };
        let (reply, mut answer) = oneshot::channel();
        let mut group: Vec<Box<dyn Unit>> = vec![Box::new(Pending {
            work: Some(insert_unit("a".into())),
            result: None,
            reply,
        })];
        assert!(commit_group(&mut writer, &mut group));
        assert_eq!(answer.try_recv().unwrap().unwrap(), 1);
        let ids: Vec<(String,)> = sqlx::query_as("SELECT id FROM t")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(ids, [("a".to_owned(),)]);
    }

    #[tokio::test]
    async fn the_health_check_sees_a_stopped_writer() {
        use chassis_core::health::Check;
        let (_dir, store) = store().await;
        store.check().await.unwrap();
        store.close_writer().await;
        assert!(store.check().await.is_err());
    }

    /// `open` reads `synchronous` back and refuses a mode that did not take; both
    /// modes the configuration can name take (an unknown one cannot be named: the
    /// mode is a `SqliteSync`).
    #[tokio::test]
    async fn each_synchronous_mode_takes() {
        let (dir, _store) = store().await;
        let path = dir.path().join("w.db");
        for mode in [SqliteSync::Normal, SqliteSync::Full] {
            SqliteWriter::open(&path, "w", mode, BUSY)
                .unwrap()
                .close()
                .await;
        }
    }

    /// Another connection holding the write lock past the busy timeout: the group
    /// cannot begin, and each caller gets contention (retry as it is).
    #[tokio::test]
    async fn a_locked_file_is_contention_for_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path(), "w", 2, SqliteSync::Normal)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT, note TEXT)")
            .execute(store.pool())
            .await
            .unwrap();
        let writer = SqliteWriter::open(
            &dir.path().join("w.db"),
            "w",
            SqliteSync::Normal,
            Duration::from_millis(50),
        )
        .unwrap();
        let mut holder = store.pool().acquire().await.unwrap();
        sqlx::Executor::execute(&mut *holder, "BEGIN IMMEDIATE")
            .await
            .unwrap();
        let err: sqlx::Error = writer
            .run(|tx| {
                Box::pin(async move {
                    tx.run("INSERT INTO t (id, n) VALUES ($1, 1)", &["a".into()])
                        .await
                })
            })
            .await
            .unwrap_err();
        assert!(is_contended(&err), "{err}");
        sqlx::Executor::execute(&mut *holder, "ROLLBACK")
            .await
            .unwrap();
        // The writer is fine afterwards.
        writer
            .run(|tx| {
                Box::pin(async move {
                    tx.run("INSERT INTO t (id, n) VALUES ($1, 1)", &["a".into()])
                        .await
                })
            })
            .await
            .map_err(|e: sqlx::Error| e)
            .unwrap();
        writer.close().await;
        assert_eq!(count(&store).await, 1);
    }
}
