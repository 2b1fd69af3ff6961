//! A headless Debian Chromium driven over W3C WebDriver (Debian's chromedriver, started
//! on a free port) with a few commands sent by reqwest: what the browser tests (the ops
//! console, the shop's journeys) share.
//!
//! The browser tests need /usr/bin/chromium and /usr/bin/chromedriver (packages
//! chromium and chromium-driver); without them they say so and pass, unless
//! `BAZAAR_TEST_BROWSER=required` (CI), where they fail.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::{TestApp, eventually_within, free_port, split_topology};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long the browser may take to show something (the console refreshes every 5 s).
pub const BROWSER_PATIENCE: Duration = Duration::from_secs(45);
/// W3C WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Whether the browser test can run here: `Err` with the reason when it cannot, which
/// fails the test under `BAZAAR_TEST_BROWSER=required`.
pub fn browser_available() -> Result<(), String> {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let reason = format!(
        "{} missing (apt-get install chromium chromium-driver)",
        missing.join(" and ")
    );
    assert!(
        std::env::var("BAZAAR_TEST_BROWSER").as_deref() != Ok("required"),
        "BAZAAR_TEST_BROWSER=required but {reason}"
    );
    Err(reason)
}

/// Where CI keeps its artifacts: `$CARGO_TARGET_DIR/ci` (default `target/ci`).
pub fn ci_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(|| workspace.join("target"), |t| workspace.join(t));
    target.join("ci")
}

/// chromedriver with one headless Chromium session. Both run in a process group of
/// their own, killed on drop, so a failing test leaves no browser behind.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`
    session: String,
    profile: TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A WebDriver answer's `value`, or its error.
async fn webdriver_value(response: reqwest::Response, what: &str) -> Result<Value, String> {
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("{what}: unreadable answer: {e}"))?;
    if status.is_success() {
        Ok(body["value"].clone())
    } else {
        Err(format!(
            "{what}: {status} {} {}",
            body["value"]["error"], body["value"]["message"]
        ))
    }
}

impl Browser {
    pub async fn start() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut browser = Self {
            driver,
            http,
            session: String::new(),
            profile,
        };
        eventually_within(
            &format!("chromedriver to be ready on {base}"),
            Duration::from_secs(30),
            || async {
                let status: Value = browser
                    .http
                    .get(format!("{base}/status"))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .json()
                    .await
                    .map_err(|e| e.to_string())?;
                if status["value"]["ready"] == true {
                    Ok(())
                } else {
                    Err(status.to_string())
                }
            },
        )
        .await;
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1440,1800",
            &format!("--user-data-dir={}", browser.profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let response = browser
            .http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("chromedriver answers");
        let value = webdriver_value(response, "new session").await.unwrap();
        let id = value["sessionId"].as_str().expect("a session id");
        browser.session = format!("{base}/session/{id}");
        browser
    }

    pub async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| format!("{path}: {e}"))?;
        webdriver_value(response, path).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        self.command(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> Result<Value, String> {
        self.command(reqwest::Method::GET, path, None).await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url})).await.unwrap();
    }

    pub async fn find_all(&self, css: &str) -> Result<Vec<String>, String> {
        let found = self
            .post("/elements", json!({"using": "css selector", "value": css}))
            .await?;
        Ok(found
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    pub async fn find(&self, css: &str) -> Result<String, String> {
        self.find_all(css)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| format!("no element matches {css}"))
    }

    /// The element's rendered text: what a person sees, hidden parts left out.
    pub async fn text(&self, element: &str) -> Result<String, String> {
        let text = self.get(&format!("/element/{element}/text")).await?;
        Ok(text.as_str().unwrap_or_default().to_owned())
    }

    pub async fn displayed(&self, element: &str) -> Result<bool, String> {
        Ok(self.get(&format!("/element/{element}/displayed")).await? == true)
    }

    pub async fn click(&self, element: &str) -> Result<(), String> {
        self.post(&format!("/element/{element}/click"), json!({}))
            .await
            .map(drop)
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await.unwrap();
        self.post(&format!("/element/{element}/clear"), json!({}))
            .await
            .unwrap();
        self.post(&format!("/element/{element}/value"), json!({"text": text}))
            .await
            .unwrap();
    }

    /// Polls (bounded) until the visible text of `css` satisfies `check`; that text.
    pub async fn wait_for_text(
        &self,
        css: &str,
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> String {
        eventually_within(&format!("{what} in {css}"), BROWSER_PATIENCE, || async {
            let text = self.visible_text(css).await?;
            if check(&text) { Ok(text) } else { Err(text) }
        })
        .await
    }

    pub async fn visible_text(&self, css: &str) -> Result<String, String> {
        let element = self.find(css).await?;
        if !self.displayed(&element).await? {
            return Err(format!("{css} is not displayed"));
        }
        self.text(&element).await
    }

    /// Clicks the first `css` element whose text contains `needle`, retrying (bounded)
    /// while the page re-renders it.
    pub async fn click_containing(&self, css: &str, needle: &str) {
        eventually_within(
            &format!("a click on {css} containing {needle:?}"),
            BROWSER_PATIENCE,
            || async {
                for element in self.find_all(css).await? {
                    if self.text(&element).await?.contains(needle) {
                        return self.click(&element).await;
                    }
                }
                Err(format!("no {css} contains {needle:?}"))
            },
        )
        .await;
    }

    pub async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.get("/screenshot").await.unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("a base64 screenshot")
    }

    /// Runs `script` (a function body) in the page; what it returns.
    pub async fn execute(&self, script: &str) -> Result<Value, String> {
        self.post("/execute/sync", json!({"script": script, "args": []}))
            .await
    }

    /// Runs `script`, which ends by calling `arguments[arguments.length - 1]` with its
    /// result; that result.
    pub async fn execute_async(&self, script: &str) -> Result<Value, String> {
        self.post("/execute/async", json!({"script": script, "args": []}))
            .await
    }

    /// The page's path and query.
    pub async fn path(&self) -> String {
        self.execute("return location.pathname + location.search")
            .await
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn quit(&self) {
        let _ = self.command(reqwest::Method::DELETE, "", None).await;
    }
}

/// A PNG's width and height, from its IHDR chunk.
pub fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    if png.len() < 24 || &png[..8] != b"\x89PNG\r\n\x1a\n" || &png[12..16] != b"IHDR" {
        return None;
    }
    let be = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    Some((be(16), be(20)))
}

/// A test app's topology and backend, as a file name's suffix: `-split`, `-postgres`
/// or nothing (the monolith on SQLite).
pub fn variant(app: &TestApp) -> &'static str {
    match (split_topology(), app.data_dir.database_url().is_some()) {
        (true, _) => "-split",
        (false, true) => "-postgres",
        (false, false) => "",
    }
}
