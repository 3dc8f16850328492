//! What a policy writes for its author: the lines of a Wasm `log` call
//! (`reten:policy/log@0.2.0`) or of Rhai's `print` and `debug`.
//!
//! Lines stay with the call that wrote them: they appear in its trace (so in
//! preview, `reten policy eval`, the fixture output and the stored trace),
//! never in the host's own log, which a tenant's text must not flood. Both the
//! count and the length are bounded per call; what is cut is said in a last
//! line from the host.

use serde::Serialize;

/// The most lines one call keeps.
pub const MAX_LINES: usize = 32;
/// The most bytes of one line kept (cut at a character boundary).
pub const MAX_LINE_BYTES: usize = 512;

/// How much a line matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARN",
            LogLevel::Error => "ERROR",
        }
    }
}

/// One line a policy wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
    /// True for the host's own last line saying what was cut.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub from_host: bool,
}

/// The lines of one call, bounded as it goes: a flood costs a counter, not
/// memory.
#[derive(Debug, Default)]
pub struct LogBuf {
    lines: Vec<LogLine>,
    dropped: u64,
    cut: u64,
}

impl LogBuf {
    /// Keeps a line, or counts it when the call has written its share.
    pub fn push(&mut self, level: LogLevel, message: &str) {
        if self.lines.len() >= MAX_LINES {
            self.dropped += 1;
            return;
        }
        let mut message = message.replace(['\r', '\n'], " ");
        if message.len() > MAX_LINE_BYTES {
            let mut end = MAX_LINE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
            self.cut += 1;
        }
        self.lines.push(LogLine { level, message, from_host: false });
    }

    /// The lines kept, with the host's marker last when any were cut.
    pub fn finish(mut self) -> Vec<LogLine> {
        let mut said = Vec::new();
        if self.dropped > 0 {
            said.push(format!("{} more lines dropped: a call keeps at most {MAX_LINES}", self.dropped));
        }
        if self.cut > 0 {
            said.push(format!("{} lines cut at {MAX_LINE_BYTES} bytes", self.cut));
        }
        if !said.is_empty() {
            self.lines.push(LogLine {
                level: LogLevel::Warn,
                message: format!("[reten] {}", said.join("; ")),
                from_host: true,
            });
        }
        self.lines
    }

    /// Takes the lines out, leaving an empty buffer.
    pub fn take(&mut self) -> Vec<LogLine> {
        std::mem::take(self).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_keeps_the_first_lines_and_says_how_many_it_dropped() {
        let mut buf = LogBuf::default();
        for i in 0..10_000 {
            buf.push(LogLevel::Info, &format!("line {i}"));
        }
        let lines = buf.finish();
        assert_eq!(lines.len(), MAX_LINES + 1);
        assert_eq!(lines[0].message, "line 0");
        let last = lines.last().unwrap();
        assert!(last.from_host && last.message.contains(&format!("{} more lines dropped", 10_000 - MAX_LINES)));
    }

    #[test]
    fn a_long_line_is_cut_on_a_character_boundary_and_newlines_become_spaces() {
        let mut buf = LogBuf::default();
        buf.push(LogLevel::Debug, &"é".repeat(400));
        buf.push(LogLevel::Info, "a\nb");
        let lines = buf.finish();
        assert!(lines[0].message.len() <= MAX_LINE_BYTES + '…'.len_utf8());
        assert_eq!(lines[1].message, "a b");
        assert!(lines[2].from_host && lines[2].message.contains("1 lines cut"));
    }
}
