//! Configuration errors: a message, the file and span it points at, a hint,
//! rendered by miette with `file:line:col` and a source snippet.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};

/// A source file that diagnostics point into: its display name and text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The name shown in diagnostics (a path relative to the unikernel, or
    /// as the user gave it).
    pub name: String,
    /// The file's text.
    pub text: Arc<str>,
}

impl SourceFile {
    /// Reads the file at `path`, shown as `name` (see [`SourceFile::from_bytes`]).
    pub fn read(path: &Path, name: impl Into<String>) -> Result<SourceFile, ConfigError> {
        let bytes = std::fs::read(path).map_err(|e| ConfigError::read(path, e))?;
        Ok(SourceFile::from_bytes(name, bytes)?)
    }

    /// The file `name` with contents `bytes`. Contents that are not UTF-8
    /// are an error located at the first invalid byte (the text shown with
    /// invalid bytes replaced). A UTF-8 byte order mark is kept: the TOML
    /// parser and `syn` accept it.
    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>) -> Result<SourceFile, Located> {
        match String::from_utf8(bytes) {
            Ok(text) => Ok(SourceFile::new(name, text)),
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                let bad = e.as_bytes().get(at).copied().unwrap_or(0);
                let file = SourceFile::new(name, String::from_utf8_lossy(e.as_bytes()));
                // Lossy decoding keeps every valid byte before `at` in place.
                Err(Located::new(
                    &file,
                    at..at + 1,
                    format!("the file is not valid UTF-8 (byte 0x{bad:02x} at offset {at})"),
                    "not UTF-8",
                )
                .with_help("save the file as UTF-8"))
            }
        }
    }

    /// A source file named `name` with `text`.
    pub fn new(name: impl Into<String>, text: impl Into<Arc<str>>) -> SourceFile {
        SourceFile {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// One configuration mistake, located in a source file. Boxed, so that
/// results carrying it stay small.
#[derive(Debug)]
pub struct Located(Box<Inner>);

#[derive(Debug)]
struct Inner {
    message: String,
    source: Option<NamedSource<Arc<str>>>,
    labels: Vec<LabeledSpan>,
    help: Option<String>,
}

impl Located {
    /// A mistake described by `message`, pointing at `span` of `file` with
    /// `label`.
    pub fn new(
        file: &SourceFile,
        span: Range<usize>,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> Located {
        let span = clamp(span, file.text.len());
        Located(Box::new(Inner {
            message: message.into(),
            source: Some(NamedSource::new(&file.name, file.text.clone())),
            labels: vec![LabeledSpan::new_primary_with_span(Some(label.into()), span)],
            help: None,
        }))
    }

    /// A mistake with no location.
    pub fn unlocated(message: impl Into<String>) -> Located {
        Located(Box::new(Inner {
            message: message.into(),
            source: None,
            labels: Vec::new(),
            help: None,
        }))
    }

    /// Adds a secondary label at `span` of the same file.
    pub fn with_label(mut self, span: Range<usize>, label: impl Into<String>) -> Located {
        let len = self.0.source.as_ref().map_or(0, |s| s.inner().len());
        self.0.labels.push(LabeledSpan::new_with_span(
            Some(label.into()),
            clamp(span, len),
        ));
        self
    }

    /// Sets the hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Located {
        self.0.help = Some(help.into());
        self
    }

    /// The one-line message.
    pub fn message(&self) -> &str {
        &self.0.message
    }
}

fn clamp(span: Range<usize>, len: usize) -> Range<usize> {
    let start = span.start.min(len);
    let end = span.end.clamp(start, len);
    start..end
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for Located {}

impl Diagnostic for Located {
    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.0.source.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.0.labels.is_empty() {
            None
        } else {
            Some(Box::new(self.0.labels.iter().cloned()))
        }
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.0
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
}

/// Why `kiln configure` (or a step after it) failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A mistake in `unikernel.toml` or in the entry function.
    #[error(transparent)]
    Invalid(Located),
    /// A file of the unikernel could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A generated file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    /// The exit code of `kiln` for this error: 2 for mistakes in the
    /// configuration, 1 for failures of the host.
    pub fn exit_code(&self) -> u8 {
        match self {
            ConfigError::Invalid(_) | ConfigError::Read { .. } => 2,
            ConfigError::Write { .. } => 1,
        }
    }

    /// An error reading `path`.
    pub fn read(path: &Path, source: std::io::Error) -> ConfigError {
        ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }
    }

    /// An error writing `path`.
    pub fn write(path: &Path, source: std::io::Error) -> ConfigError {
        ConfigError::Write {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<Located> for ConfigError {
    fn from(located: Located) -> ConfigError {
        ConfigError::Invalid(located)
    }
}

impl Diagnostic for ConfigError {
    fn source_code(&self) -> Option<&dyn SourceCode> {
        match self {
            ConfigError::Invalid(l) => l.source_code(),
            _ => None,
        }
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        match self {
            ConfigError::Invalid(l) => l.labels(),
            _ => None,
        }
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        match self {
            ConfigError::Invalid(l) => l.help(),
            ConfigError::Read { path, .. } if path.ends_with("unikernel.toml") => Some(Box::new(
                "run kiln in a unikernel's directory, pass that directory, or create one with `kiln new NAME`",
            )),
            _ => None,
        }
    }
}

/// The longest source text around a label that is shown as a snippet;
/// beyond it a diagnostic shows `file:line:col` without the snippet.
/// (miette's graphical handler also panics on a label past column 65,535.)
const MAX_SNIPPET_BYTES: usize = 1024;

/// Renders `diagnostic` for a person: graphical with a source snippet,
/// colours only when `color` is true. Where a label's lines are too long
/// to show, the location is given as `file:line:col` with no snippet.
pub fn render(diagnostic: &dyn Diagnostic, color: bool) -> String {
    if let Some(plain) = render_without_snippet(diagnostic) {
        return plain;
    }
    let theme = if color {
        miette::GraphicalTheme::unicode()
    } else {
        miette::GraphicalTheme::unicode_nocolor()
    };
    let handler = miette::GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_links(false);
    let mut out = String::new();
    if handler.render_report(&mut out, diagnostic).is_err() {
        out = format!("error: {diagnostic}\n");
    }
    // kiln's messages call the fix a hint; miette's prefix has the same
    // width, so wrapped lines stay aligned.
    out.replace("  help: ", "  hint: ")
}

/// `diagnostic` as `message`, `--> file:line:col` and its hint, where a
/// label's lines (with one line of context each side) are too long for a
/// snippet; `None` where the snippet can be shown.
fn render_without_snippet(diagnostic: &dyn Diagnostic) -> Option<String> {
    let source = diagnostic.source_code()?;
    let labels: Vec<LabeledSpan> = diagnostic.labels()?.collect();
    let too_long = labels.iter().any(|label| {
        source
            .read_span(label.inner(), 1, 1)
            .map_or(true, |c| c.data().len() > MAX_SNIPPET_BYTES)
    });
    if !too_long {
        return None;
    }
    let mut out = format!("error: {diagnostic}\n");
    for label in &labels {
        let contents = source.read_span(label.inner(), 0, 0).ok()?;
        let name = contents.name().unwrap_or("<source>");
        out.push_str(&format!(
            "  --> {name}:{}:{}",
            contents.line() + 1,
            contents.column() + 1
        ));
        if let Some(text) = label.label() {
            out.push_str(&format!(": {text}"));
        }
        out.push_str(" (the line is too long to show)\n");
    }
    if let Some(help) = diagnostic.help() {
        out.push_str(&format!("  hint: {help}\n"));
    }
    Some(out)
}

/// The candidate closest to `name`, if one is close enough to be a
/// misspelling of it: for "did you mean" hints.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|&(score, c)| score >= 0.8 && c != name)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}
