//! The agent's log: every line goes to the console at once and into a bounded buffer that the
//! agent ships to the appliance when it can (best effort: a full buffer drops its oldest lines
//! and says how many).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Lines kept for the appliance before the oldest are dropped.
const BUFFERED_LINES: usize = 2000;

/// Shared handle to the log buffer; cloning shares it.
#[derive(Clone, Default)]
pub struct Console {
    inner: Arc<Mutex<Buffer>>,
}

#[derive(Default)]
struct Buffer {
    lines: VecDeque<String>,
    partial: Vec<u8>,
    dropped: usize,
}

impl Console {
    /// Installs the tracing subscriber that writes to stderr (the console for PID 1) and here,
    /// logging events at `level` and above.
    pub fn install(&self, level: tracing::Level) {
        let console = self.clone();
        // A second install (tests) keeps the first subscriber; nothing to do about it.
        let _ = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_target(false)
            .without_time()
            .with_writer(move || console.clone())
            .try_init();
    }

    /// Takes the buffered lines, oldest first, with a note about dropped ones.
    pub fn take_lines(&self) -> Vec<String> {
        let mut buffer = self.lock();
        let mut lines: Vec<String> = buffer.lines.drain(..).collect();
        if buffer.dropped > 0 {
            lines.insert(
                0,
                format!("({} older log lines were dropped)", buffer.dropped),
            );
            buffer.dropped = 0;
        }
        lines
    }

    /// Puts lines back at the front after a failed upload.
    pub fn restore(&self, lines: Vec<String>) {
        let mut buffer = self.lock();
        for line in lines.into_iter().rev() {
            if buffer.lines.len() >= BUFFERED_LINES {
                buffer.dropped += 1;
            } else {
                buffer.lines.push_front(line);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        // A panic while holding this lock cannot leave the buffer inconsistent in a way that
        // matters for best-effort logging, so a poisoned lock is used as it is.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Write for Console {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        // The console first: it is the only log if the network never comes up.
        let _ = std::io::stderr().write_all(bytes);
        let mut buffer = self.lock();
        buffer.partial.extend_from_slice(bytes);
        while let Some(end) = buffer.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..end]).into_owned();
            if buffer.lines.len() >= BUFFERED_LINES {
                buffer.lines.pop_front();
                buffer.dropped += 1;
            }
            buffer.lines.push_back(text);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_buffered_and_bounded() {
        let mut console = Console::default();
        console.write_all(b"first\nsec").expect("write");
        console.write_all(b"ond\n").expect("write");
        assert_eq!(console.take_lines(), ["first", "second"]);
        for i in 0..BUFFERED_LINES + 5 {
            console
                .write_all(format!("{i}\n").as_bytes())
                .expect("write");
        }
        let lines = console.take_lines();
        assert_eq!(lines[0], "(5 older log lines were dropped)");
        assert_eq!(lines[1], "5");
        assert_eq!(lines.len(), BUFFERED_LINES + 1);
    }

    #[test]
    fn restored_lines_come_back_first() {
        let mut console = Console::default();
        console.write_all(b"b\n").expect("write");
        console.restore(vec!["a".into()]);
        assert_eq!(console.take_lines(), ["a", "b"]);
    }
}
