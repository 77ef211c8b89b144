//! The services.yaml model, the `${...}` grammar and validation diagnostics.
//!
//! ```no_run
//! let loaded = harness_config::load(std::path::Path::new("services.yaml"));
//! for d in loaded.diagnostics() {
//!     eprintln!("{d}");
//! }
//! if let Some(project) = &loaded.project {
//!     for wave in project.start_waves().unwrap_or_default() {
//!         println!("{wave:?}");
//!     }
//! }
//! ```
//!
//! Loading never panics and never stops at the first problem: it returns the project (when there
//! are no errors) together with every error and warning, each with file, line, column and field
//! path. Hostile input is bounded: files over [`MAX_FILE_BYTES`] are refused before parsing, and
//! the YAML parser runs with limits on aliases, nesting depth and node count.

mod decode;
mod diagnostic;
mod dotenv;
mod duration;
mod graph;
mod layers;
mod mask;
mod model;
mod node;
mod schema;
pub mod subnet;
mod template;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::NamedSource;

pub use diagnostic::{Code, Diagnostic, Severity, SourceDiagnostic};
pub use duration::{format_duration, parse_duration};
pub use graph::{CycleError, Wave};
pub use mask::{MASK, SECRET_MARKERS, is_secret_key, mask_secrets};
pub use model::*;
pub use schema::json_schema;
pub use template::{
    MAX_NESTING, Part, Property, ServiceRef, Template, TemplateError, TemplateErrorKind, VarLookup,
    escape_dollars, substitute,
};

use decode::{Decoder, Layered, Positions};
pub use dotenv::DotenvError;
pub use layers::MAX_REPLICAS;
use node::{Node, ParseError};

/// Files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: u64 = 10 << 20;
/// Deepest YAML nesting accepted; services.yaml needs about 6.
pub const MAX_DEPTH: usize = 64;
/// Most alias (`*name`) uses accepted: a 1,000-service file merging two anchors per service
/// needs 2,000; alias bombs are stopped by [`MAX_ALIAS_EXPANSION`].
pub const MAX_ALIASES: usize = 10_000;
/// Most events replayed from aliases, which bounds alias-bomb expansion.
pub const MAX_ALIAS_EXPANSION: usize = 100_000;

/// The result of loading a services.yaml: the project if it is valid, and every diagnostic.
#[derive(Debug)]
pub struct Loaded {
    /// Present exactly when there are no errors.
    pub project: Option<Project>,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    /// The first file as read, for rendering snippets.
    pub source: Arc<NamedSource<String>>,
    /// Every file as read (the first, then the override files).
    pub sources: Vec<Arc<NamedSource<String>>>,
    files: Vec<PathBuf>,
    positions: Positions,
    /// The merged YAML tree the project was decoded from, freed with the rest: a caller that
    /// exits right after loading (`harness validate`) need not free it node by node.
    tree: Option<Node>,
}

/// How to load: what the command line adds to the files.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Active profiles (`--profile`, `HARNESS_PROFILES`); `*` activates all.
    pub profiles: Vec<String>,
    /// The project name, instead of `name:` or the folder's name (`-p`).
    pub project_name: Option<String>,
    /// Instance counts that replace `replicas:` (`harness scale svc=N`).
    pub replicas: BTreeMap<String, u32>,
}

/// An invalid services.yaml, renderable with miette (each problem is a related diagnostic).
#[derive(Debug, thiserror::Error)]
#[error("{} is invalid: {} error(s)", .file.display(), .errors.len())]
pub struct ConfigError {
    pub file: PathBuf,
    pub errors: Vec<SourceDiagnostic>,
}

impl miette::Diagnostic for ConfigError {
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        Some(Box::new(
            self.errors.iter().map(|e| e as &dyn miette::Diagnostic),
        ))
    }
}

impl Loaded {
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty() && self.project.is_some()
    }

    /// Errors, then warnings, each in file order.
    pub fn diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.errors.iter().chain(&self.warnings)
    }

    /// Every diagnostic with its source snippet, for miette's report handlers.
    pub fn report(&self) -> Vec<SourceDiagnostic> {
        self.diagnostics()
            .map(|d| SourceDiagnostic {
                diagnostic: d.clone(),
                source: self.source_of(d),
            })
            .collect()
    }

    /// The text a diagnostic points into (a `.env` problem has no snippet: an empty text).
    fn source_of(&self, d: &Diagnostic) -> Arc<NamedSource<String>> {
        let name = d.file.display().to_string();
        self.sources
            .iter()
            .find(|s| s.name() == name)
            .cloned()
            .unwrap_or_else(|| Arc::new(NamedSource::new(name, String::new())))
    }

    /// Where the value at `path` (`services.api.ports[0]`) was set: file, line, column, and
    /// whether it was written there (`false`: a default, answered with its nearest written
    /// parent).
    pub fn origin(&self, path: &str) -> Option<(&Path, u32, u32, bool)> {
        let pos = self.positions.find(path)?;
        let file = self.files.get(usize::from(pos.file))?;
        Some((
            file.as_path(),
            pos.line,
            pos.column,
            self.positions.is_recorded(path),
        ))
    }

    /// The project, or the errors as one miette-renderable error (warnings are dropped).
    pub fn into_result(self) -> Result<Project, ConfigError> {
        match self.project {
            Some(p) if self.errors.is_empty() => Ok(p),
            _ => Err(ConfigError {
                file: PathBuf::from(self.source.name()),
                errors: self
                    .errors
                    .iter()
                    .map(|diagnostic| SourceDiagnostic {
                        diagnostic: diagnostic.clone(),
                        source: self.source_of(diagnostic),
                    })
                    .collect(),
            }),
        }
    }
}

/// Loads `path`, substituting variables from the process environment, then `.env` beside the
/// file, then the `env_file`s it names.
pub fn load(path: &Path) -> Loaded {
    load_with_env(path, &process_env)
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// [`load`] with the process environment replaced by `env` (tests, the daemon on behalf of a
/// client whose environment differs).
pub fn load_with_env(path: &Path, env: &dyn VarLookup) -> Loaded {
    load_files_with_env(&[path.to_owned()], &LoadOptions::default(), env)
}

/// Loads a file and its override files (`-f base.yaml -f override.yaml`), merged as Compose
/// merges them, with profiles, project name and replica counts from `options`.
pub fn load_files(paths: &[PathBuf], options: &LoadOptions) -> Loaded {
    load_files_with_env(paths, options, &process_env)
}

/// [`load_files`] with the process environment replaced by `env`.
pub fn load_files_with_env(
    paths: &[PathBuf],
    options: &LoadOptions,
    env: &dyn VarLookup,
) -> Loaded {
    let mut texts = Vec::with_capacity(paths.len());
    for path in paths {
        let whole_file = |code, message: String| {
            let d = Diagnostic::new(Severity::Error, code, path, None, "", message);
            let source = Arc::new(NamedSource::new(path.display().to_string(), String::new()));
            Loaded {
                project: None,
                errors: vec![d],
                warnings: Vec::new(),
                source: source.clone(),
                sources: vec![source],
                files: vec![path.clone()],
                positions: Positions::default(),
                tree: None,
            }
        };
        match std::fs::metadata(path) {
            Ok(m) if m.len() > MAX_FILE_BYTES => {
                return whole_file(
                    Code::TooLarge,
                    format!(
                        "the file is {:.1} MiB; services.yaml files are limited to {} MiB",
                        m.len() as f64 / f64::from(1 << 20),
                        MAX_FILE_BYTES >> 20
                    ),
                );
            }
            Ok(_) => {}
            Err(e) => return whole_file(Code::Io, format!("cannot read {}: {e}", path.display())),
        }
        match decode::read_capped(path) {
            Ok(text) => texts.push((path.clone(), text)),
            Err(e) => {
                return whole_file(
                    Code::TooLarge,
                    format!("cannot load {}: {e}", path.display()),
                );
            }
        }
    }
    load_texts(texts, options, env)
}

/// Loads services.yaml text as if read from `path` (whose folder holds `.env` and `env_file`s,
/// and names the project by default).
///
/// `.env` is read only when a variable is not in `env`: this is how the daemon reloads a
/// definition the CLI already substituted, where the client's variables are gone.
pub fn load_str(path: &Path, text: String, env: &dyn VarLookup) -> Loaded {
    load_inner(
        vec![(path.to_owned(), text)],
        &LoadOptions::default(),
        env,
        false,
    )
}

/// Loads texts as if read from their paths: the first is the project file (its folder holds
/// `.env` and names the project by default), the others override it in order.
/// `.env` is always read, so a bad line in it is reported even when no variable needs it.
pub fn load_texts(
    texts: Vec<(PathBuf, String)>,
    options: &LoadOptions,
    env: &dyn VarLookup,
) -> Loaded {
    load_inner(texts, options, env, true)
}

fn load_inner(
    texts: Vec<(PathBuf, String)>,
    options: &LoadOptions,
    env: &dyn VarLookup,
    eager_dotenv: bool,
) -> Loaded {
    let files: Vec<PathBuf> = texts.iter().map(|(p, _)| p.clone()).collect();
    let sources: Vec<Arc<NamedSource<String>>> = texts
        .into_iter()
        .map(|(p, t)| Arc::new(NamedSource::new(p.display().to_string(), t)))
        .collect();
    let path = files
        .first()
        .cloned()
        .unwrap_or_else(|| PathBuf::from("services.yaml"));
    let mut loaded = Loaded {
        project: None,
        errors: Vec::new(),
        warnings: Vec::new(),
        source: sources.first().cloned().unwrap_or_else(|| {
            Arc::new(NamedSource::new(path.display().to_string(), String::new()))
        }),
        sources: sources.clone(),
        files: files.clone(),
        positions: Positions::default(),
        tree: None,
    };
    let mut root: Option<Node> = None;
    let mut parsed = parse_all(&sources);
    for (index, (file, source)) in files.iter().zip(&sources).enumerate() {
        let text = source.inner();
        if text.len() as u64 > MAX_FILE_BYTES {
            loaded.errors.push(Diagnostic::new(
                Severity::Error,
                Code::TooLarge,
                file,
                None,
                "",
                format!(
                    "the text is larger than the {} MiB limit",
                    MAX_FILE_BYTES >> 20
                ),
            ));
            continue;
        }
        let result = parsed
            .get_mut(index)
            .map(|r| std::mem::replace(r, Err((None, String::new()))))
            .unwrap_or_else(|| Err((None, "not parsed".to_owned())));
        match result {
            Ok(node) => match &mut root {
                None => root = Some(node),
                Some(base) => layers::merge(base, node, ""),
            },
            Err((pos, message)) => loaded.errors.push(Diagnostic::new(
                Severity::Error,
                Code::Syntax,
                file,
                pos,
                "",
                message,
            )),
        }
    }
    let Some(mut root) = root.filter(|_| loaded.errors.is_empty()) else {
        return loaded;
    };
    let file_of = |i: u16| {
        files
            .get(usize::from(i))
            .cloned()
            .unwrap_or_else(|| path.clone())
    };
    layers::apply_profiles(&mut root, &options.profiles);
    let mut diags = layers::expand_replicas(&mut root, &options.replicas, &file_of);

    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dotenv = decode::Dotenv::new(base_dir.join(".env"));
    if eager_dotenv {
        dotenv.load(env);
    }
    let mut decoder = Decoder {
        files: &files,
        sources: sources.iter().map(|s| s.inner().as_str()).collect(),
        settings: Settings::default(),
        base_dir,
        vars: Layered {
            process: env,
            dotenv,
            files: Vec::new(),
        },
        diags: Vec::new(),
        // About one recorded field path per 14 bytes of YAML (bench/validate_compose.sh:
        // 37,000 paths in 538 KB): sized once, as growing would rehash and touch both tables.
        positions: Positions::with_capacity(
            sources.iter().map(|s| s.inner().len()).sum::<usize>() / 14,
        ),
    };
    let mut project = decoder.project(&root, default_name(base_dir));
    if let (Some(project), Some(name)) = (&mut project, &options.project_name) {
        project.name = name.clone();
    }
    diags.extend(decoder.diags);
    diags.extend(decoder.vars.dotenv.take_error());
    if let Some(project) = &project {
        let broken: std::collections::HashSet<String> = diags
            .iter()
            .filter_map(|d| d.path.strip_prefix("services."))
            .map(|rest| rest.split(['.', '[']).next().unwrap_or(rest).to_owned())
            .collect();
        diags.extend(validate::validate(
            project,
            &decoder.positions,
            &file_of,
            &broken,
        ));
    }
    diags.sort_by_key(|d| (d.file != path, d.line.is_none(), d.line, d.column));
    let (errors, warnings): (Vec<_>, Vec<_>) = diags.into_iter().partition(Diagnostic::is_error);
    loaded.errors = errors;
    loaded.warnings = warnings;
    loaded.positions = decoder.positions;
    if loaded.errors.is_empty() {
        loaded.project = project;
    }
    loaded.tree = Some(root);
    loaded
}

fn default_name(base_dir: &Path) -> String {
    std::fs::canonicalize(base_dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "harness".to_owned())
}

/// Stack for the parser thread: serde-saphyr recurses per nesting level, with large frames in
/// debug builds, and callers (test threads, async executors) may have small stacks.
const PARSER_STACK_BYTES: usize = 64 << 20;

/// Parses every file into the spanned tree under the hostile-input limits, all at once, each on
/// its own thread whose stack fits [`MAX_DEPTH`] levels whatever the caller's stack is (override
/// files cost no extra wall time on a machine with cores to spare).
fn parse_all(sources: &[Arc<NamedSource<String>>]) -> Vec<Result<Node, ParseError>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = sources
            .iter()
            .enumerate()
            .map(|(index, source)| {
                let text = source.inner().as_str();
                let file = u16::try_from(index).unwrap_or(u16::MAX);
                if text.len() as u64 > MAX_FILE_BYTES {
                    return Err("the file is too large".to_owned());
                }
                std::thread::Builder::new()
                    .name("yaml-parser".into())
                    .stack_size(PARSER_STACK_BYTES)
                    .spawn_scoped(scope, move || parse_yaml_here(text, file))
                    .map_err(|e| format!("cannot start the parser: {e}"))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| match handle {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err((None, "the YAML parser crashed".to_owned()))),
                Err(e) => Err((None, e)),
            })
            .collect()
    })
}

fn parse_yaml_here(text: &str, file: u16) -> Result<Node, ParseError> {
    node::parse(
        text,
        file,
        node::Limits {
            max_depth: MAX_DEPTH,
            max_nodes: 1_000_000,
            max_aliases: MAX_ALIASES,
            max_alias_expansion: MAX_ALIAS_EXPANSION,
        },
    )
}

/// An env file's variables by Compose's rules (a later line for the same key wins), for
/// callers that keep their own variable maps; `env` answers `${VAR}` and bare `KEY` lines.
pub fn parse_env_file(
    text: &str,
    env: &dyn VarLookup,
) -> Result<HashMap<String, String>, DotenvError> {
    dotenv::parse(text, env).map(|vars| vars.into_iter().collect())
}
