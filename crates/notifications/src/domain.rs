//! Emails as values: what each event says, and how it is written down (RFC 5322).
//! Pure: no I/O, the clock is a parameter.

use std::fmt::Write as _;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use contracts::orders::OrderLine;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

/// What an email is about; also the `kind` column and the API's `kind`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Welcome,
    OrderConfirmed,
    OrderFailed,
    OrderCancelled,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Welcome,
        Kind::OrderConfirmed,
        Kind::OrderFailed,
        Kind::OrderCancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Welcome => "welcome",
            Kind::OrderConfirmed => "order_confirmed",
            Kind::OrderFailed => "order_failed",
            Kind::OrderCancelled => "order_cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A display name and an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: String,
}

impl Mailbox {
    pub fn new(name: Option<&str>, address: &str) -> Self {
        Self {
            name: name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()),
            address: address.trim().to_owned(),
        }
    }

    /// `Name <local@domain>` or a bare `local@domain`; `None` unless the address has
    /// one `@` with text on both sides and no whitespace or control characters.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let (name, address) = match (raw.rfind('<'), raw.strip_suffix('>')) {
            (Some(open), Some(rest)) => (
                Some(raw[..open].trim().trim_matches('"')),
                &rest[open + 1..],
            ),
            (None, None) => (None, raw),
            _ => return None,
        };
        is_address(address).then(|| Self::new(name, address))
    }

    /// The mailbox as a header value: the name as an RFC 2047 encoded word unless it
    /// is plain ASCII text.
    pub fn header_value(&self) -> String {
        match &self.name {
            Some(name) if is_plain_phrase(name) => format!("{name} <{}>", self.address),
            Some(name) => format!("{} <{}>", encode_words(name).join("\r\n "), self.address),
            None => self.address.clone(),
        }
    }
}

/// One `@` with text on both sides, no whitespace, control or delimiter characters:
/// safe to put in a header as is.
pub fn is_address(address: &str) -> bool {
    let mut parts = address.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | ','))
}

/// ASCII letters, digits, spaces and a few marks: safe unquoted in a header phrase.
fn is_plain_phrase(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 60
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '\'' | '!' | '?' | '+'))
}

/// RFC 2047 `=?utf-8?B?...?=` words of at most 75 characters, split on character
/// boundaries. Encoding also neutralises CR/LF a user put into their name.
fn encode_words(s: &str) -> Vec<String> {
    // 39 bytes -> 52 base64 characters, + 12 for `=?utf-8?B??=` = 64: with a
    // header name before it, a line stays within 78 characters.
    const CHUNK: usize = 39;
    let mut words = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for (i, c) in s.char_indices() {
        if i + c.len_utf8() - start > CHUNK {
            words.push(&s[start..end]);
            start = i;
        }
        end = i + c.len_utf8();
    }
    if end > start {
        words.push(&s[start..end]);
    }
    words
        .into_iter()
        .map(|w| format!("=?utf-8?B?{}?=", STANDARD.encode(w)))
        .collect()
}

/// A header value: as is when it is printable ASCII that fits a line, encoded words
/// (folded) otherwise.
fn header_text(s: &str) -> String {
    if s.len() <= 900 && s.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        s.to_owned()
    } else {
        encode_words(s).join("\r\n ")
    }
}

/// One email, ready for any transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// The notification id: the `.eml` file name and the Message-ID's left part.
    pub id: String,
    pub kind: Kind,
    pub from: Mailbox,
    pub to: Mailbox,
    pub subject: String,
    /// Plain text, `\n` line ends.
    pub body: String,
    pub date: OffsetDateTime,
}

/// Where Message-IDs say they come from.
pub const MESSAGE_ID_DOMAIN: &str = "bazaar.invalid";

impl Email {
    pub fn message_id(&self) -> String {
        format!("<{}@{MESSAGE_ID_DOMAIN}>", self.id)
    }

    /// The message as RFC 5322 text: CRLF line ends, UTF-8 body sent as 8bit.
    pub fn to_rfc5322(&self) -> String {
        let date = self
            .date
            .format(&Rfc2822)
            .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".to_owned());
        let mut out = String::with_capacity(self.body.len() + 512);
        let _ = write!(out, "From: {}\r\n", self.from.header_value());
        let _ = write!(out, "To: {}\r\n", self.to.header_value());
        let _ = write!(out, "Subject: {}\r\n", header_text(&self.subject));
        let _ = write!(out, "Date: {date}\r\n");
        let _ = write!(out, "Message-ID: {}\r\n", self.message_id());
        out.push_str("MIME-Version: 1.0\r\n");
        out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
        out.push_str("Content-Transfer-Encoding: 8bit\r\n");
        let _ = write!(out, "X-Bazaar-Kind: {}\r\n", self.kind.as_str());
        out.push_str("\r\n");
        for line in self.body.lines() {
            out.push_str(line);
            out.push_str("\r\n");
        }
        out
    }
}

/// `$1,234.56` (negative amounts with a leading minus).
pub fn dollars(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    let whole = (abs / 100).to_string();
    let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{sign}${grouped}.{:02}", abs % 100)
}

/// An order failure reason as words a customer understands.
pub fn reason_in_words(reason: &str) -> String {
    match reason {
        "out_of_stock" => "one or more items in it were out of stock".to_owned(),
        "payment_declined" => "your payment was declined".to_owned(),
        "payment_unavailable" | "payment_timeout" => {
            "we could not reach our payment provider in time".to_owned()
        }
        "unknown_product" => "it contained a product we no longer sell".to_owned(),
        "expired" | "reservation_expired" => "it was not completed in time".to_owned(),
        other => format!("of a problem on our side ({})", other.replace('_', " ")),
    }
}

/// A line's product as the customer knows it: its name when the order was placed.
/// Orders placed before names were carried only have the id. Control characters
/// become spaces: a name is one line of the body.
pub fn product_in_words(line: &OrderLine) -> String {
    let name = line.name.trim();
    if name.is_empty() {
        format!("product {}", line.product_id)
    } else {
        name.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    }
}

/// Who receives the email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub user_id: String,
    pub email: String,
    pub name: String,
}

impl Recipient {
    fn mailbox(&self) -> Mailbox {
        Mailbox::new(Some(&self.name), &self.email)
    }

    /// The name as quoted data: between guillemets, with anything that could end the
    /// quote, break the line or reorder the text (controls, bidi overrides, the
    /// guillemets themselves) shown as an escape instead.
    fn quoted_name(&self) -> String {
        let mut quoted = String::from("«");
        for c in self.name.trim().chars() {
            // `escape_debug` differs from the char itself for controls and other
            // non-printing characters; quotes are fine as they are. A backslash is
            // escaped too, so an escape in the output is always ours.
            let plain = matches!(c, '\'' | '"') || c.escape_debug().eq(std::iter::once(c));
            if plain && c != '«' && c != '»' {
                quoted.push(c);
            } else {
                quoted.extend(c.escape_unicode());
            }
        }
        quoted.push('»');
        quoted
    }
}

/// What every email has besides its text.
#[derive(Debug, Clone)]
pub struct Addressing<'a> {
    pub id: &'a str,
    pub from: &'a Mailbox,
    pub to: &'a Recipient,
    pub date: OffsetDateTime,
}

impl Addressing<'_> {
    fn email(&self, kind: Kind, subject: String, body: String) -> Email {
        Email {
            id: self.id.to_owned(),
            kind,
            from: self.from.clone(),
            to: self.to.mailbox(),
            subject,
            body,
            date: self.date,
        }
    }
}

/// The greeting never contains the name: the name is free text its owner chose,
/// and spliced into our sentences it would read as the shop's own words
/// ("Hello Ada, your refund is waiting at http://…,").
const GREETING: &str = "Hello,";

const SIGNATURE: &str =
    "\n-- \nbazaar\nThis message was sent automatically; replies are not read.\n";

/// The name appears once, as a labelled, quoted field, never in the subject or in
/// a sentence.
pub fn welcome(env: &Addressing<'_>) -> Email {
    let subject = "Welcome to bazaar".to_owned();
    let body = format!(
        "{GREETING}\n\nWelcome to bazaar! Your account is ready: sign in with {email} \
         to fill your cart and check out.\n\nAccount name: {name}\n{SIGNATURE}",
        email = env.to.email,
        name = env.to.quoted_name(),
    );
    env.email(Kind::Welcome, subject, body)
}

pub fn order_confirmed(
    env: &Addressing<'_>,
    order_id: &str,
    lines: &[OrderLine],
    total_cents: i64,
    currency: &str,
) -> Email {
    let subject = format!("Your bazaar order {order_id} is confirmed");
    let mut body = format!(
        "{GREETING}\n\nThank you for your order. We have received your payment and your \
         order is confirmed.\n\nOrder: {order_id}\n\n"
    );
    for line in lines {
        let line_total = line.price_cents.saturating_mul(i64::from(line.quantity));
        let _ = writeln!(
            body,
            "  {} x {} at {} = {}",
            line.quantity,
            product_in_words(line),
            dollars(line.price_cents),
            dollars(line_total)
        );
    }
    let _ = writeln!(body, "\nTotal: {} {currency}", dollars(total_cents));
    body.push_str(SIGNATURE);
    env.email(Kind::OrderConfirmed, subject, body)
}

pub fn order_failed(env: &Addressing<'_>, order_id: &str, reason: &str) -> Email {
    let subject = format!("Your bazaar order {order_id} could not be completed");
    let body = format!(
        "{GREETING}\n\nWe are sorry: your order {order_id} could not be completed because {}.\n\
         You have not been charged for it. You are welcome to try again.\n{SIGNATURE}",
        reason_in_words(reason),
    );
    env.email(Kind::OrderFailed, subject, body)
}

pub fn order_cancelled(
    env: &Addressing<'_>,
    order_id: &str,
    refunded_cents: i64,
    currency: &str,
) -> Email {
    let subject = format!("Your bazaar order {order_id} was cancelled");
    let body = format!(
        "{GREETING}\n\nYour order {order_id} has been cancelled. We have refunded {} \
         {currency} to your original payment method; it may take a few days to appear.\n\
         {SIGNATURE}",
        dollars(refunded_cents),
    );
    env.email(Kind::OrderCancelled, subject, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipient(name: &str) -> Recipient {
        Recipient {
            user_id: "u1".into(),
            email: "ada@example.com".into(),
            name: name.into(),
        }
    }

    fn at() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap() // 2026-01-01
    }

    #[test]
    fn dollars_formats_cents() {
        assert_eq!(dollars(0), "$0.00");
        assert_eq!(dollars(5), "$0.05");
        assert_eq!(dollars(1299), "$12.99");
        assert_eq!(dollars(123_456_789), "$1,234,567.89");
        assert_eq!(dollars(100_000), "$1,000.00");
        assert_eq!(dollars(-250), "-$2.50");
    }

    #[test]
    fn kinds_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("spam"), None);
    }

    #[test]
    fn mailbox_parsing() {
        let m = Mailbox::parse("bazaar <no-reply@bazaar.test>").unwrap();
        assert_eq!(m.name.as_deref(), Some("bazaar"));
        assert_eq!(m.address, "no-reply@bazaar.test");
        assert_eq!(
            Mailbox::parse("a@b.c").unwrap(),
            Mailbox::new(None, "a@b.c")
        );
        assert!(Mailbox::parse("nobody").is_none());
        assert!(Mailbox::parse("a@b@c").is_none());
        assert!(Mailbox::parse("x <a b@c>").is_none());
        assert!(Mailbox::parse("x <a@c").is_none());
    }

    #[test]
    fn welcome_email_is_rfc5322_with_the_name() {
        let from = Mailbox::parse("bazaar <no-reply@bazaar.test>").unwrap();
        let to = recipient("Ada Lovelace");
        let email = welcome(&Addressing {
            id: "0190-abc",
            from: &from,
            to: &to,
            date: at(),
        });
        assert_eq!(email.subject, "Welcome to bazaar");
        assert!(email.body.starts_with("Hello,\n"));
        assert!(email.body.contains("\nAccount name: «Ada Lovelace»\n"));
        let text = email.to_rfc5322();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("From: bazaar <no-reply@bazaar.test>\r\n"));
        assert!(head.contains("To: Ada Lovelace <ada@example.com>\r\n"));
        assert!(head.contains("Subject: Welcome to bazaar\r\n"));
        assert!(head.contains("Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"));
        assert!(head.contains("Message-ID: <0190-abc@bazaar.invalid>\r\n"));
        assert!(head.contains("MIME-Version: 1.0\r\n"));
        assert!(head.contains("Content-Type: text/plain; charset=utf-8\r\n"));
        assert!(body.contains("ada@example.com"));
        // CRLF everywhere, never a bare LF.
        assert!(!text.replace("\r\n", "").contains('\n'));
    }

    #[test]
    fn hostile_or_non_ascii_names_are_encoded_not_injected() {
        let from = Mailbox::parse("no-reply@bazaar.test").unwrap();
        let to = recipient("Zoë\r\nBcc: victim@example.com");
        let email = welcome(&Addressing {
            id: "n1",
            from: &from,
            to: &to,
            date: at(),
        });
        let text = email.to_rfc5322();
        let (head, _) = text.split_once("\r\n\r\n").unwrap();
        assert!(!head.contains("Bcc:"));
        assert!(head.contains("To: =?utf-8?B?"));
        assert!(head.contains("Subject: Welcome to bazaar\r\n"));
        for line in head.split("\r\n") {
            assert!(line.len() <= 78, "{line}");
        }
    }

    #[test]
    fn the_welcome_renders_the_name_as_quoted_data_not_as_our_words() {
        let from = Mailbox::parse("no-reply@bazaar.test").unwrap();
        let name = "Ada» Your refund: http://evil.example «\u{202e}\nBcc:";
        let to = recipient(name);
        let email = welcome(&Addressing {
            id: "n1",
            from: &from,
            to: &to,
            date: at(),
        });
        assert_eq!(email.subject, "Welcome to bazaar");
        assert!(email.body.starts_with("Hello,\n"), "{}", email.body);
        let line = email
            .body
            .lines()
            .find(|l| l.starts_with("Account name: "))
            .expect("an Account name line");
        assert_eq!(
            line,
            "Account name: «Ada\\u{bb} Your refund: http://evil.example \\u{ab}\\u{202e}\\u{a}Bcc:»"
        );
        // Nothing of the name outside its one quoted line.
        assert_eq!(email.body.matches("evil.example").count(), 1);
        assert!(!email.body.contains('\u{202e}'));
        // Other emails do not greet by name either.
        let failed = order_failed(
            &Addressing {
                id: "n2",
                from: &from,
                to: &to,
                date: at(),
            },
            "o-1",
            "out_of_stock",
        );
        assert!(!failed.body.contains("evil"), "{}", failed.body);
    }

    #[test]
    fn long_names_fold_into_several_encoded_words() {
        let words = encode_words(&"é".repeat(100));
        assert!(words.len() > 1);
        for w in &words {
            assert!(w.len() <= 64, "{w}");
        }
        let decoded: String = words
            .iter()
            .map(|w| {
                let b64 = w.trim_start_matches("=?utf-8?B?").trim_end_matches("?=");
                String::from_utf8(STANDARD.decode(b64).unwrap()).unwrap()
            })
            .collect();
        assert_eq!(decoded, "é".repeat(100));
    }

    #[test]
    fn order_confirmed_lists_lines_and_total_in_dollars() {
        let from = Mailbox::parse("no-reply@bazaar.test").unwrap();
        let to = recipient("Ada");
        let lines = vec![
            OrderLine {
                product_id: "p1".into(),
                quantity: 2,
                price_cents: 1299,
                name: "Blue Teapot".into(),
            },
            OrderLine {
                product_id: "p2".into(),
                quantity: 1,
                price_cents: 150_000,
                name: "Espresso Machine".into(),
            },
        ];
        let email = order_confirmed(
            &Addressing {
                id: "n1",
                from: &from,
                to: &to,
                date: at(),
            },
            "o-42",
            &lines,
            152_598,
            "USD",
        );
        assert_eq!(email.kind, Kind::OrderConfirmed);
        assert!(email.subject.contains("o-42"));
        assert!(
            email.body.contains("2 x Blue Teapot at $12.99 = $25.98"),
            "{}",
            email.body
        );
        assert!(
            email
                .body
                .contains("1 x Espresso Machine at $1,500.00 = $1,500.00")
        );
        assert!(email.body.contains("Total: $1,525.98 USD"));
        assert!(!email.body.contains("p1"), "{}", email.body);
    }

    #[test]
    fn a_line_without_a_name_says_its_product_id_and_names_stay_on_their_line() {
        let line = |name: &str| OrderLine {
            product_id: "p1".into(),
            quantity: 1,
            price_cents: 100,
            name: name.into(),
        };
        assert_eq!(product_in_words(&line("")), "product p1");
        assert_eq!(product_in_words(&line("  ")), "product p1");
        assert_eq!(product_in_words(&line("Mug")), "Mug");
        assert_eq!(product_in_words(&line("Mug\r\nBcc: x")), "Mug  Bcc: x");
    }

    #[test]
    fn failure_and_cancellation_say_why_and_how_much() {
        let from = Mailbox::parse("no-reply@bazaar.test").unwrap();
        let to = recipient("");
        let env = Addressing {
            id: "n1",
            from: &from,
            to: &to,
            date: at(),
        };
        let failed = order_failed(&env, "o-1", "out_of_stock");
        assert!(failed.body.starts_with("Hello,"));
        assert!(failed.body.contains("out of stock"));
        assert!(!failed.body.contains("out_of_stock"));
        assert!(
            order_failed(&env, "o-1", "payment_declined")
                .body
                .contains("payment was declined")
        );
        assert!(
            order_failed(&env, "o-1", "mystery_error")
                .body
                .contains("mystery error")
        );
        let cancelled = order_cancelled(&env, "o-2", 4599, "USD");
        assert_eq!(cancelled.kind, Kind::OrderCancelled);
        assert!(cancelled.body.contains("refunded $45.99 USD"));
        assert_eq!(welcome(&env).subject, "Welcome to bazaar");
    }
}
