//! The layering of `src/`, checked on the source text: the domain is the bottom layer (plain
//! data and rules, no framework, no storage); the store and the actors build on it; the HTTP
//! api reaches users through the actors and never sees storage; `startup` wires them together
//! through each layer's own module. The sled crate is the store's business and the actor crate
//! the actors'.
//!
//! Comments and the contents of string and character literals are ignored. A path counts from
//! its first segment (`sled` in `crate::store::sled` is the store's module, not the crate), and
//! each path a `use` imports counts with its `{...}` groups expanded. Relative `super::` paths
//! are not followed.

use std::path::{Path, PathBuf};

/// Which source files a rule is about, by their path below `src/`.
enum Files {
    Under(&'static str),
    Outside(&'static str),
}

impl Files {
    fn contains(&self, file: &str) -> bool {
        match self {
            Files::Under(dir) => file.starts_with(dir),
            Files::Outside(dir) => !file.starts_with(dir),
        }
    }
}

/// Files that must not use any of `forbidden` (path roots such as `sled` or `crate::store`).
struct Rule {
    files: Files,
    forbidden: &'static [&'static str],
    why: &'static str,
}

/// The `.rs` files below `src/`, as paths relative to it with `/` separators, sorted.
fn source_files() -> Vec<(String, PathBuf)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    walk(&src, &mut paths);
    let mut files: Vec<(String, PathBuf)> = paths
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).expect("below src");
            let name: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            (name.join("/"), p)
        })
        .collect();
    files.sort();
    assert!(
        files.iter().any(|(f, _)| f == "lib.rs"),
        "src/lib.rs among {files:?}"
    );
    files
}

/// Every breach of `rules` in the source, as `src/<file>:<line>: ...`.
fn violations(rules: &[Rule]) -> Vec<String> {
    let mut found = Vec::new();
    for (file, path) in source_files() {
        let source = std::fs::read_to_string(&path).expect("source file");
        for rule in rules.iter().filter(|r| r.files.contains(&file)) {
            for root in rule.forbidden {
                for line in lines_using(&source, root) {
                    found.push(format!("src/{file}:{line}: uses {root}: {}", rule.why));
                }
            }
        }
    }
    found
}

fn assert_layered(rules: &[Rule]) {
    let found = violations(rules);
    assert!(
        found.is_empty(),
        "{} layering violation(s):\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn sled_is_used_only_by_the_store() {
    assert_layered(&[Rule {
        files: Files::Outside("store/"),
        forbidden: &["sled"],
        why: "the sled crate is used only under src/store/",
    }]);
}

#[test]
fn the_postgres_crates_are_used_only_by_the_store() {
    assert_layered(&[Rule {
        files: Files::Outside("store/"),
        forbidden: &["tokio_postgres", "deadpool_postgres", "postgres"],
        why: "the PostgreSQL client crates are used only under src/store/",
    }]);
}

#[test]
fn the_actor_crate_is_used_only_by_the_actors() {
    assert_layered(&[Rule {
        files: Files::Outside("actors/"),
        forbidden: &["actix"],
        why: "the actix crate is used only under src/actors/ (others go through crate::actors)",
    }]);
}

#[test]
fn the_domain_uses_no_framework_and_no_storage() {
    assert_layered(&[Rule {
        files: Files::Under("domain/"),
        forbidden: &[
            "actix",
            "actix_web",
            "sled",
            "tokio_postgres",
            "deadpool_postgres",
            "utoipa",
            "dashmap",
        ],
        why: "the domain is plain data and rules",
    }]);
}

#[test]
fn the_api_never_sees_the_store() {
    assert_layered(&[Rule {
        files: Files::Under("api/"),
        forbidden: &["crate::store"],
        why: "the HTTP layer reaches users through the actors only",
    }]);
}

#[test]
fn each_layer_uses_only_the_layers_below_it() {
    assert_layered(&[
        Rule {
            files: Files::Under("domain/"),
            forbidden: &[
                "crate::store",
                "crate::actors",
                "crate::api",
                "crate::startup",
            ],
            why: "the domain is the bottom layer",
        },
        Rule {
            files: Files::Under("store/"),
            forbidden: &["crate::actors", "crate::api", "crate::startup"],
            why: "the store is below the actors, the api and startup",
        },
        Rule {
            files: Files::Under("actors/"),
            forbidden: &["crate::api", "crate::startup"],
            why: "the actors are below the api and startup",
        },
    ]);
}

#[test]
fn the_matcher_finds_uses_and_only_uses() {
    let hits = |line: &str, root: &str| !lines_using(line, root).is_empty();
    for (line, root) in [
        ("use sled::Db;", "sled"),
        ("use sled;", "sled"),
        ("let db = sled::open(path)?;", "sled"),
        ("fn f(t: &sled::Tree) {}", "sled"),
        ("let db = ::sled::open(path)?;", "sled"),
        ("use actix::prelude::*;", "actix"),
        ("impl actix::Actor for A {}", "actix"),
        ("#[utoipa::path(get, path = \"/x\")]", "utoipa"),
        ("use crate::store::Store;", "crate::store"),
        ("use crate::store;", "crate::store"),
        ("let e = crate::store::StoreError::Closed;", "crate::store"),
        ("use crate::{api, store::{self, Store}};", "crate::store"),
        (
            "pub(crate) use crate::actors::{Directory as D};",
            "crate::actors",
        ),
        ("x = format!(\"{}\", sled::VERSION);", "sled"),
    ] {
        assert!(hits(line, root), "{root} is used in {line:?}");
    }
    // A grouped import split over lines is reported where the path ends.
    let grouped = "use crate::{\n    api,\n    store::Store,\n};\n";
    assert_eq!(lines_using(grouped, "crate::store"), [3]);
    for (line, root) in [
        ("use actix_web::web;", "actix"),
        ("actix_rt::spawn(f);", "actix"),
        ("use actix_http::Request;", "actix"),
        ("let sled_store = open();", "sled"),
        ("let sled = 1;", "sled"),
        ("mod sled;", "sled"),
        ("use crate::store::sled::SledStore;", "sled"),
        ("let n = db.sled::<u8>();", "sled"),
        ("// use sled::Db;", "sled"),
        ("/// Opens sled::Db, see sled::open.", "sled"),
        ("//! No actix::Actor here.", "actix"),
        ("/* sled::open */ let x = 1;", "sled"),
        ("let s = \"use sled::Db;\";", "sled"),
        ("let s = r#\"sled::open\"#;", "sled"),
        ("let q = '\"'; let s = \"actix::x\";", "actix"),
        ("let q = '\\''; let s = \"sled::x\";", "sled"),
        ("let s = b\"sled::x\"; let t = br\"sled::y\";", "sled"),
        ("fn f<'a>(x: &'a str) -> &'a str { x }", "sled"),
        ("use crate::stores::Store;", "crate::store"),
        ("use crate::store_api::X;", "crate::store"),
        ("let c = my::crate_store::x;", "crate::store"),
        ("use crate::{api, actors};", "crate::store"),
        ("pub(crate) fn store() {}", "crate::store"),
    ] {
        assert!(!hits(line, root), "{root} is not used in {line:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The matcher.
// ---------------------------------------------------------------------------------------------

/// The lines (1-based, ascending, each once) where `source` uses the path `root` (`sled`,
/// `crate::store`): a path that starts with it and goes on (`sled::open`), or an import of it.
fn lines_using(source: &str, root: &str) -> Vec<usize> {
    let root: Vec<&str> = root.split("::").collect();
    let mut lines: Vec<usize> = paths(&code_only(source))
        .into_iter()
        .filter(|p| {
            p.segments.len() >= root.len()
                && p.segments.iter().zip(&root).all(|(s, r)| s == r)
                && (p.imported || p.segments.len() > root.len() || p.goes_on)
        })
        .map(|p| p.line)
        .collect();
    lines.dedup();
    lines
}

/// `source` with comments and the contents of string and character literals blanked out
/// (newlines kept, so every line keeps its number).
fn code_only(source: &str) -> String {
    let c: Vec<char> = source.chars().collect();
    let ident = |i: usize| {
        c.get(i)
            .is_some_and(|&ch| ch.is_alphanumeric() || ch == '_')
    };
    // At an `r` that opens a raw string (`r"`, `r#"`, `br"`, not the end of a name): its `#`s.
    let raw_string_at = |i: usize| {
        let starts = c[i] == 'r' && (i == 0 || !ident(i - 1) || c[i - 1] == 'b');
        let hashes = c[i + 1..].iter().take_while(|&&ch| ch == '#').count();
        (starts && c.get(i + 1 + hashes) == Some(&'"')).then_some(hashes)
    };
    let blank = |out: &mut String, from: usize, to: usize| {
        out.extend(
            c[from..to]
                .iter()
                .map(|&ch| if ch == '\n' { '\n' } else { ' ' }),
        );
    };
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < c.len() {
        let start = i;
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            // Block comments nest.
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_at(i) {
            i += hashes + 2;
            while i < c.len() && !(c[i] == '"' && c[i + 1..].iter().take(hashes).all(|&h| h == '#'))
            {
                i += 1;
            }
            i = (i + 1 + hashes).min(c.len());
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i = (i + 1).min(c.len());
        } else if c[i] == '\'' && next == Some('\\') {
            // An escaped character literal: '\n', '\'', '\u{1F600}'.
            i += 3;
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            i = (i + 1).min(c.len());
        } else if c[i] == '\'' && c.get(i + 2) == Some(&'\'') {
            i += 3;
        } else {
            // Code, including a lifetime's quote.
            out.push(c[i]);
            i += 1;
            continue;
        }
        blank(&mut out, start, i);
    }
    out
}

/// A path the code names.
#[derive(Debug)]
struct PathUse {
    segments: Vec<String>,
    /// The line of its last segment.
    line: usize,
    /// Named by a `use` declaration.
    imported: bool,
    /// Followed by `::` that no name follows, as in `sled::<T>` or `sled::{...}`.
    goes_on: bool,
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    /// `::`
    PathSep,
    Other(char),
}

/// The tokens of code (identifiers, `::` and single punctuation marks), with their lines.
fn tokens(code: &str) -> Vec<(Token, usize)> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        if c[i] == '\n' {
            line += 1;
            i += 1;
        } else if c[i].is_whitespace() {
            i += 1;
        } else if c[i].is_alphanumeric() || c[i] == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push((Token::Ident(c[start..i].iter().collect()), line));
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            out.push((Token::PathSep, line));
            i += 2;
        } else {
            out.push((Token::Other(c[i]), line));
            i += 1;
        }
    }
    out
}

/// Every path in `code`: those in expressions, types and attributes, where a path that
/// continues another (after `x::` or `x.`) is not one of its own, and those `use` declarations
/// import.
fn paths(code: &str) -> Vec<PathUse> {
    let toks = tokens(code);
    let at = |i: usize| toks.get(i).map(|(t, _)| t);
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let Some(Token::Ident(name)) = at(i) else {
            i += 1;
            continue;
        };
        let continues = match i.checked_sub(1).and_then(at) {
            Some(Token::Other('.')) => true,
            // `a::b` continues `a`, `Vec<T>::new` a type; a leading `::` starts a path.
            Some(Token::PathSep) => matches!(
                i.checked_sub(2).and_then(at),
                Some(Token::Ident(_) | Token::Other('>'))
            ),
            _ => false,
        };
        if continues {
            i += 1;
        } else if name == "use" {
            i += 1;
            use_tree(&toks, &mut i, Vec::new(), &mut out);
        } else {
            let mut segments = vec![name.clone()];
            i += 1;
            while let (Some(Token::PathSep), Some(Token::Ident(next))) = (at(i), at(i + 1)) {
                segments.push(next.clone());
                i += 2;
            }
            out.push(PathUse {
                segments,
                line: toks[i - 1].1,
                imported: false,
                goes_on: at(i) == Some(&Token::PathSep),
            });
        }
    }
    out
}

/// Reads the use tree at `toks[*i]` below `prefix` (`a::b`, `a::*`, `a as b`,
/// `a::{b, c::{self, d}}`), adding each path it imports to `out`.
fn use_tree(toks: &[(Token, usize)], i: &mut usize, prefix: Vec<String>, out: &mut Vec<PathUse>) {
    let at = |i: usize| toks.get(i).map(|(t, _)| t);
    let mut segments = prefix;
    if at(*i) == Some(&Token::PathSep) {
        *i += 1;
    }
    loop {
        match at(*i) {
            Some(Token::Ident(name)) if name != "as" => {
                segments.push(name.clone());
                *i += 1;
                if at(*i) != Some(&Token::PathSep) {
                    break;
                }
                *i += 1;
            }
            Some(Token::Other('*')) => {
                *i += 1;
                break;
            }
            Some(Token::Other('{')) => {
                *i += 1;
                while !matches!(at(*i), Some(Token::Other('}')) | None) {
                    use_tree(toks, i, segments.clone(), out);
                    if at(*i) == Some(&Token::Other(',')) {
                        *i += 1;
                    }
                }
                *i += 1;
                return;
            }
            _ => break,
        }
    }
    if let (Some(Token::Ident(word)), Some(Token::Ident(_))) = (at(*i), at(*i + 1)) {
        if word == "as" {
            *i += 2;
        }
    }
    // `a::{self}` imports `a` itself.
    if segments.last().is_some_and(|s| s == "self") {
        segments.pop();
    }
    if !segments.is_empty() {
        out.push(PathUse {
            segments,
            line: toks[(*i).max(1) - 1].1,
            imported: true,
            goes_on: false,
        });
    }
}
