//! A POSIX shell on the target, running one script and talking back while it runs.
//!
//! The script goes to `sh` on its stdin as one `{ … }` group ([`crate::script::for_stdin`]): a
//! shell runs a compound command only once it has read all of it, so a script cut short by a
//! dropped connection is a syntax error that runs nothing. While the script runs it prints
//! protocol lines on stdout (`cutover-ready …`, see [`crate::script::protocol`]) and, at the
//! points where it waits, reads one word from its stdin (`go`, `commit`, …): that is how a fleet
//! of hosts is held at a barrier and switched together.
//!
//! A word must never be sent before the script has printed its first line: dash and busybox sh
//! read their input in blocks, and a word that arrived while they were still reading the script
//! would be taken for a command. [`Shell::started`] tells when words are safe.
//!
//! Over SSH the shell is the session's one exec call (`sh`); on a `local` target it is
//! `/bin/sh` started here. Both pass the script's stderr through (each line with the host's
//! prefix in a fleet), or keep it to show only if the script fails (`--quiet`).

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// What the shell said.
#[derive(Debug)]
enum Event {
    Line(String),
    /// The server would not run the command (an SFTP-only account refuses exec).
    Refused,
    /// The shell ended: its exit status, None when killed or the connection dropped.
    Exit(Option<u32>),
}

/// Where the script's stderr goes.
#[derive(Clone)]
pub struct Stderr {
    /// Put before every line (`[web1] `), empty for a single host.
    prefix: String,
    /// Keep the lines instead of printing them (shown by [`Shell::kept_stderr`] on failure).
    quiet: bool,
    kept: Arc<Mutex<Vec<u8>>>,
    partial: Arc<Mutex<Vec<u8>>>,
    /// The script's `cutover: warning: …` lines, for the report.
    warnings: Arc<Mutex<Vec<String>>>,
    /// The script's `cutover: error: …` lines: the first is why it failed.
    errors: Arc<Mutex<Vec<String>>>,
}

impl Stderr {
    pub fn new(prefix: &str, quiet: bool) -> Stderr {
        Stderr {
            prefix: prefix.to_string(),
            quiet,
            kept: Arc::default(),
            partial: Arc::default(),
            warnings: Arc::default(),
            errors: Arc::default(),
        }
    }

    /// The warnings the script printed so far.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().unwrap().clone()
    }

    /// Pass `data` on, a whole line at a time, so lines of several hosts never interleave.
    fn write(&self, data: &[u8]) {
        let mut partial = self.partial.lock().unwrap();
        partial.extend_from_slice(data);
        while let Some(end) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            self.emit(&line);
        }
    }

    fn flush(&self) {
        let rest: Vec<u8> = std::mem::take(&mut *self.partial.lock().unwrap());
        if !rest.is_empty() {
            let mut line = rest;
            line.push(b'\n');
            self.emit(&line);
        }
    }

    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        if let Some(w) = text.trim_end().strip_prefix("cutover: warning: ") {
            self.warnings.lock().unwrap().push(w.to_string());
        }
        if let Some(e) = text.trim_end().strip_prefix("cutover: error: ") {
            self.errors.lock().unwrap().push(e.to_string());
        }
        if self.quiet {
            // Kept with the host's prefix: shown only if the script fails, as it would have been.
            let mut kept = self.kept.lock().unwrap();
            kept.extend_from_slice(self.prefix.as_bytes());
            kept.extend_from_slice(line);
            return;
        }
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(self.prefix.as_bytes());
        let _ = err.write_all(line);
    }
}

enum Input {
    Ssh(russh::ChannelWriteHalf<russh::client::Msg>),
    Local(tokio::process::ChildStdin),
    Closed,
}

/// A running shell: send it the script and words, read its protocol lines, wait for its end.
pub struct Shell {
    input: Input,
    events: mpsc::UnboundedReceiver<Event>,
    stderr: Stderr,
    started: bool,
    refused: bool,
    exit: Option<Option<u32>>,
    /// Lines read ahead by [`Shell::ended_or_said`], not yet returned by `next_line`.
    ahead: std::collections::VecDeque<String>,
    /// Every stdout line so far (for messages when something else than the script ran).
    pub stdout: Vec<String>,
}

impl Shell {
    /// `sh` over an SSH exec channel (already opened, `exec` not yet requested).
    pub(super) async fn over_ssh(
        channel: russh::Channel<russh::client::Msg>,
        stderr: Stderr,
    ) -> Result<Shell> {
        channel
            .exec(true, "sh")
            .await
            .context("the server refused to run a shell")?;
        let (mut read, write) = channel.split();
        let (tx, events) = mpsc::unbounded_channel();
        let err = stderr.clone();
        tokio::spawn(async move {
            let mut lines = LineSplitter::default();
            let mut code = None;
            // OpenSSH sends the exit status after EOF: read until the channel closes.
            while let Some(msg) = read.wait().await {
                match msg {
                    russh::ChannelMsg::Data { data } => {
                        for l in lines.push(&data) {
                            let _ = tx.send(Event::Line(l));
                        }
                    }
                    russh::ChannelMsg::ExtendedData { data, .. } => err.write(&data),
                    russh::ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                    russh::ChannelMsg::Failure => {
                        let _ = tx.send(Event::Refused);
                    }
                    russh::ChannelMsg::ExitSignal { signal_name, .. } => {
                        err.write(
                            format!("cutover: the script was killed by signal {signal_name:?}\n")
                                .as_bytes(),
                        );
                    }
                    _ => {}
                }
            }
            if let Some(l) = lines.finish() {
                let _ = tx.send(Event::Line(l));
            }
            err.flush();
            let _ = tx.send(Event::Exit(code));
        });
        Ok(Shell::new(Input::Ssh(write), events, stderr))
    }

    /// `/bin/sh` on this machine, in `/`.
    pub(super) fn local(stderr: Stderr) -> Result<Shell> {
        use std::process::Stdio;
        let mut child = tokio::process::Command::new("/bin/sh")
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run /bin/sh")?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut child_err = child.stderr.take().expect("stderr is piped");
        let (tx, events) = mpsc::unbounded_channel();
        let err = stderr.clone();
        let errors = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = child_err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                err.write(&buf[..n]);
            }
            err.flush();
        });
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx.send(Event::Line(l));
            }
            let status = child.wait().await.ok();
            let _ = errors.await;
            let code = status.and_then(|s| s.code()).map(|c| c as u32);
            let _ = tx.send(Event::Exit(code));
        });
        Ok(Shell::new(Input::Local(stdin), events, stderr))
    }

    fn new(input: Input, events: mpsc::UnboundedReceiver<Event>, stderr: Stderr) -> Shell {
        Shell {
            input,
            events,
            stderr,
            started: false,
            refused: false,
            exit: None,
            ahead: Default::default(),
            stdout: Vec::new(),
        }
    }

    /// Send the script, as one brace group.
    pub async fn send_script(&mut self, script: &str) -> Result<()> {
        self.write(crate::script::for_stdin(script).as_bytes())
            .await
            .context("cannot send the script")
    }

    /// Send one word (a line) to the waiting script. Only once [`Shell::started`].
    pub async fn say(&mut self, word: &str) -> Result<()> {
        debug_assert!(self.started, "words go only to a script that runs");
        self.write(format!("{word}\n").as_bytes())
            .await
            .with_context(|| format!("cannot send `{word}` to the script"))
    }

    async fn write(&mut self, data: &[u8]) -> Result<()> {
        match &mut self.input {
            Input::Ssh(w) => w.data_bytes(data.to_vec()).await.map_err(Into::into),
            Input::Local(w) => {
                w.write_all(data).await?;
                w.flush().await.map_err(Into::into)
            }
            Input::Closed => anyhow::bail!("the script's input is closed"),
        }
    }

    /// End the script's input: a script waiting for a word reads end-of-input and stops
    /// (before the swap it removes what it built; after it, it switches back).
    pub async fn close_input(&mut self) {
        match std::mem::replace(&mut self.input, Input::Closed) {
            Input::Ssh(w) => {
                let _ = w.eof().await;
            }
            Input::Local(mut w) => {
                let _ = w.shutdown().await;
            }
            Input::Closed => {}
        }
    }

    /// Has the script printed its first line (so words may be sent)?
    pub fn started(&self) -> bool {
        self.started
    }

    /// Did the server refuse to run the shell at all?
    pub fn refused(&self) -> bool {
        self.refused
    }

    /// The next stdout line; None once the shell has ended (see [`Shell::exit_code`]).
    pub async fn next_line(&mut self) -> Option<String> {
        if let Some(l) = self.ahead.pop_front() {
            return Some(l);
        }
        if self.exit.is_some() {
            return None;
        }
        loop {
            let event = self.events.recv().await;
            if let Some(l) = self.take(event) {
                return Some(l);
            }
            if self.exit.is_some() {
                return None;
            }
        }
    }

    /// One event: a line to return, or a state change (None).
    fn take(&mut self, event: Option<Event>) -> Option<String> {
        match event {
            Some(Event::Line(l)) => {
                if l.starts_with(crate::script::protocol::STARTED) {
                    self.started = true;
                }
                self.stdout.push(l.clone());
                Some(l)
            }
            Some(Event::Refused) => {
                self.refused = true;
                None
            }
            Some(Event::Exit(code)) => {
                self.exit = Some(code);
                None
            }
            None => {
                self.exit = Some(None);
                None
            }
        }
    }

    /// Without waiting: has the shell ended, or printed a line starting with one of `words`,
    /// since the last line read? (The lines stay for `next_line`.) A fleet asks each host
    /// before it sends the word that moves them all: one that stopped waiting on its own
    /// (barrier_timeout) must not be left behind.
    pub fn ended_or_said(&mut self, words: &[&str]) -> bool {
        while self.exit.is_none() {
            match self.events.try_recv() {
                Ok(event) => {
                    if let Some(l) = self.take(Some(event)) {
                        self.ahead.push_back(l);
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.take(None);
                }
            }
        }
        self.exit.is_some()
            || self
                .ahead
                .iter()
                .any(|l| words.iter().any(|w| l.starts_with(w)))
    }

    /// Wait for the shell to end (reading and keeping the rest of its output); its exit
    /// status, None when it was killed or the connection dropped.
    pub async fn wait(&mut self) -> Option<u32> {
        while self.next_line().await.is_some() {}
        self.exit.flatten()
    }

    /// The exit status, once the shell has ended.
    pub fn exit_code(&self) -> Option<Option<u32>> {
        self.exit
    }

    /// The warnings the script printed.
    pub fn warnings(&self) -> Vec<String> {
        self.stderr.warnings()
    }

    /// Why the script failed, as it said first (`cutover: error: …`), if it said.
    pub fn first_error(&self) -> Option<String> {
        self.stderr.errors.lock().unwrap().first().cloned()
    }

    /// What the script wrote on stderr while `--quiet` kept it back.
    pub fn kept_stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.kept.lock().unwrap()).into_owned()
    }
}

/// Bytes in, whole lines out.
#[derive(Default)]
struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, data: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            out.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
        }
        out
    }

    fn finish(&mut self) -> Option<String> {
        (!self.buf.is_empty())
            .then(|| String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned())
    }
}
