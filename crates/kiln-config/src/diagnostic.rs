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

/// Renders `diagnostic` for a person: graphical with a source snippet,
/// colours only when `color` is true.
pub fn render(diagnostic: &dyn Diagnostic, color: bool) -> String {
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
