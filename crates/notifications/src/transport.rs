//! The mail transport port and its adapters.
//!
//! - [`MaildirTransport`] (the default): each email is an RFC 5322 `.eml` file named
//!   after its notification id, written atomically (temporary file, rename; with
//!   fsync of the file and the directory when durable). Sending the same email again
//!   replaces the same file: still one email.
//! - [`SmtpTransport`]: hands the message to an SMTP relay (lettre). SMTP has no way
//!   to take a message back, so a crash between the relay's acceptance and the
//!   commit of the notification row sends it twice: at-least-once. The Message-ID is
//!   the notification id, so receiving systems can recognise the duplicate.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::domain::Email;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot write the email: {0}")]
    Io(#[from] std::io::Error),
    /// The message cannot be built or addressed; retrying will not help.
    #[error("the email cannot be sent as addressed: {0}")]
    Rejected(String),
    #[error("the mail server failed: {0}")]
    Server(String),
    #[error("invalid mail transport configuration: {0}")]
    Config(String),
}

impl TransportError {
    /// True when sending the same email again cannot succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            TransportError::Rejected(_) | TransportError::Config(_)
        )
    }
}

/// Where emails go.
#[async_trait::async_trait]
pub trait MailTransport: Send + Sync {
    /// Sends `email`. Sending the same email (same id) twice must not make two
    /// emails where the transport can promise it (maildir); otherwise at-least-once.
    async fn send(&self, email: &Email) -> Result<(), TransportError>;

    /// For logs: `maildir:/path` or `smtp://host:port`.
    fn describe(&self) -> String;
}

/// Writes each email to `<dir>/<id>.eml`.
#[derive(Debug, Clone)]
pub struct MaildirTransport {
    dir: PathBuf,
    durable: bool,
}

impl MaildirTransport {
    /// Durable: each file and the directory are fsynced before `send` returns.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir, durable: true }
    }

    /// Whether to fsync (a few milliseconds per email on an ordinary disk). Without
    /// it the temp-file-and-rename is still atomic against a process crash; only a
    /// power loss can lose a just-written email — as it can lose the just-committed
    /// notification row under SQLite `synchronous = NORMAL`, so the two agree when
    /// this follows the store's setting.
    #[must_use]
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file an email with this id is written to.
    pub fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.eml"))
    }
}

/// Ids become file names: only ASCII letters, digits, `-` and `_` (UUIDs are).
fn is_safe_file_stem(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn write_atomically(dir: &Path, id: &str, text: &str, durable: bool) -> std::io::Result<()> {
    // Emails hold names and addresses: the directory and each file are owner-only.
    chassis::private_fs::create_dir(dir)?;
    let target = dir.join(format!("{id}.eml"));
    // A dot file in the same directory (same file system, so the rename is atomic);
    // unique, so two writers of the same email never share a temporary file.
    let temp = dir.join(format!(".{id}.{}.tmp", uuid::Uuid::now_v7().simple()));
    let result = (|| {
        let mut file = chassis::private_fs::create_file(&temp)?;
        file.write_all(text.as_bytes())?;
        if durable {
            file.sync_all()?;
        }
        std::fs::rename(&temp, &target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result?;
    // Make the rename itself durable (directories can be opened for fsync on Unix).
    #[cfg(unix)]
    if durable {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MailTransport for MaildirTransport {
    async fn send(&self, email: &Email) -> Result<(), TransportError> {
        if !is_safe_file_stem(&email.id) {
            return Err(TransportError::Rejected(format!(
                "notification id {:?} is not usable as a file name",
                email.id
            )));
        }
        let dir = self.dir.clone();
        let id = email.id.clone();
        let text = email.to_rfc5322();
        let durable = self.durable;
        tokio::task::spawn_blocking(move || write_atomically(&dir, &id, &text, durable))
            .await
            .map_err(|e| TransportError::Io(std::io::Error::other(e)))??;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("maildir:{}", self.dir.display())
    }
}

/// Sends through an SMTP relay given by a URL: `smtp://host:port` (plain, or
/// STARTTLS with `?tls=required`), `smtps://host:port` (implicit TLS), with
/// optional `user:password@`. See lettre's `AsyncSmtpTransport::from_url`.
#[derive(Clone)]
pub struct SmtpTransport {
    inner: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    url: String,
}

chassis::debug_fields!(SmtpTransport { url });

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl SmtpTransport {
    /// Builds the transport; connects lazily, on the first send.
    pub fn from_url(url: &str) -> Result<Self, TransportError> {
        let inner = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url)
            .map_err(|e| TransportError::Config(format!("{}: {e}", redact(url))))?
            .timeout(Some(std::time::Duration::from_secs(10)))
            .build();
        Ok(Self {
            inner,
            url: redact(url),
        })
    }

    fn message(email: &Email) -> Result<lettre::Message, TransportError> {
        let mailbox =
            |m: &crate::domain::Mailbox| -> Result<lettre::message::Mailbox, TransportError> {
                let address: lettre::Address = m
                    .address
                    .parse()
                    .map_err(|e| TransportError::Rejected(format!("{}: {e}", m.address)))?;
                Ok(lettre::message::Mailbox::new(m.name.clone(), address))
            };
        let date = std::time::SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(
                u64::try_from(email.date.unix_timestamp()).unwrap_or(0),
            );
        lettre::Message::builder()
            .from(mailbox(&email.from)?)
            .to(mailbox(&email.to)?)
            .subject(email.subject.clone())
            .date(date)
            .message_id(Some(email.message_id()))
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(email.body.clone())
            .map_err(|e| TransportError::Rejected(e.to_string()))
    }
}

#[async_trait::async_trait]
impl MailTransport for SmtpTransport {
    async fn send(&self, email: &Email) -> Result<(), TransportError> {
        use lettre::AsyncTransport as _;
        let message = Self::message(email)?;
        match self.inner.send(message).await {
            Ok(_) => Ok(()),
            // 5xx: the server refuses this message for good.
            Err(e) if e.is_permanent() => Err(TransportError::Rejected(e.to_string())),
            Err(e) => Err(TransportError::Server(e.to_string())),
        }
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

/// The transport a configuration value names: `maildir` (or empty) for files under
/// `<data_dir>/mail`, `maildir:/some/dir` for another directory, `smtp://...` or
/// `smtps://...` for a relay. `durable` is the maildir's fsync setting (see
/// [`MaildirTransport::durable`]).
pub fn from_config(
    spec: &str,
    data_dir: &Path,
    durable: bool,
) -> Result<Arc<dyn MailTransport>, TransportError> {
    let spec = spec.trim();
    if spec.is_empty() || spec == "maildir" {
        return Ok(Arc::new(
            MaildirTransport::new(data_dir.join("mail")).durable(durable),
        ));
    }
    if let Some(dir) = spec.strip_prefix("maildir:") {
        return Ok(Arc::new(
            MaildirTransport::new(PathBuf::from(dir)).durable(durable),
        ));
    }
    if spec.starts_with("smtp://") || spec.starts_with("smtps://") {
        return Ok(Arc::new(SmtpTransport::from_url(spec)?));
    }
    Err(TransportError::Config(format!(
        "{:?}: expected `maildir`, `maildir:<dir>`, `smtp://host:port` or `smtps://host:port`",
        redact(spec)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Kind, Mailbox};

    fn email(id: &str, subject: &str) -> Email {
        Email {
            id: id.into(),
            kind: Kind::Welcome,
            from: Mailbox::new(Some("bazaar"), "no-reply@bazaar.test"),
            to: Mailbox::new(Some("Ada"), "ada@example.com"),
            subject: subject.into(),
            body: "Hello\n".into(),
            date: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[tokio::test]
    async fn maildir_writes_one_file_per_id_and_overwrites_on_resend() {
        let dir = tempfile::tempdir().unwrap();
        let transport = MaildirTransport::new(dir.path().join("mail"));
        transport.send(&email("n-1", "first")).await.unwrap();
        let transport = transport.durable(false);
        transport.send(&email("n-1", "again")).await.unwrap();
        transport.send(&email("n-2", "other")).await.unwrap();
        let mut names: Vec<String> = std::fs::read_dir(transport.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["n-1.eml", "n-2.eml"]);
        let text = std::fs::read_to_string(transport.path_of("n-1")).unwrap();
        assert!(text.contains("Subject: again\r\n"));
    }

    #[tokio::test]
    async fn maildir_refuses_ids_that_are_not_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let transport = MaildirTransport::new(dir.path().to_path_buf());
        for id in ["../escape", "", ".hidden", "a/b"] {
            let err = transport.send(&email(id, "x")).await.unwrap_err();
            assert!(err.is_permanent(), "{id}");
        }
    }

    #[test]
    fn config_selects_a_transport() {
        let dir = Path::new("/var/lib/bazaar");
        assert_eq!(
            from_config("maildir", dir, true).unwrap().describe(),
            "maildir:/var/lib/bazaar/mail"
        );
        assert_eq!(
            from_config("", dir, false).unwrap().describe(),
            "maildir:/var/lib/bazaar/mail"
        );
        assert_eq!(
            from_config("maildir:/tmp/out", dir, true)
                .unwrap()
                .describe(),
            "maildir:/tmp/out"
        );
        // Built, not connected: no server is needed to construct it.
        let smtp = from_config("smtp://user:secret@localhost:2525", dir, true).unwrap();
        assert_eq!(smtp.describe(), "smtp://***@localhost:2525");
        assert!(from_config("carrier-pigeon", dir, true).is_err());
    }

    #[test]
    fn smtp_messages_carry_the_notification_id() {
        let message = SmtpTransport::message(&email("n-9", "Hi")).unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        assert!(text.contains("Message-ID: <n-9@bazaar.invalid>"));
        assert!(text.contains("Subject: Hi"));
        let mut bad = email("n-9", "Hi");
        bad.to.address = "not an address".into();
        assert!(SmtpTransport::message(&bad).unwrap_err().is_permanent());
    }
}
