//! Model ids: `ORG/NAME[@REVISION]`, as the hub spells them, and the cache folder each one lives in.

use crate::error::{ErrorKind, HubError};

/// The revision used when none is given.
pub const DEFAULT_REVISION: &str = "main";

/// A model repository on the hub and the revision asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    /// `ORG/NAME`.
    pub repo: String,
    /// A branch, tag or commit (`main` unless given after `@`).
    pub revision: String,
}

impl ModelRef {
    /// Parses `ORG/NAME[@REVISION]`. ORG and NAME use the hub's characters (letters, digits, `-`, `_`, `.`), do not
    /// start or end with `-` or `.`, and hold no `--` or `..`; a revision is any non-empty text without spaces.
    pub fn parse(text: &str) -> Result<ModelRef, HubError> {
        let invalid = |reason: &str| HubError::new(text, ErrorKind::InvalidId { reason: reason.into() });
        let (id, revision) = match text.split_once('@') {
            Some((_, "")) => return Err(invalid("nothing after `@`")),
            Some((id, rev)) => (id, rev),
            None => (text, DEFAULT_REVISION),
        };
        if revision.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("the revision holds spaces"));
        }
        let parts: Vec<&str> = id.split('/').collect();
        if parts.len() != 2 {
            return Err(invalid("an id has exactly one `/`"));
        }
        for part in parts {
            if part.is_empty() || part.len() > 96 {
                return Err(invalid("ORG and NAME are 1 to 96 characters"));
            }
            if !part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
                return Err(invalid("only letters, digits, `-`, `_` and `.` are allowed"));
            }
            if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) || part.contains("--") || part.contains("..")
            {
                return Err(invalid("no leading or trailing `-` or `.`, no `--` or `..`"));
            }
        }
        Ok(ModelRef { repo: id.to_string(), revision: revision.to_string() })
    }

    /// The cache folder name, `models--ORG--NAME`.
    pub fn folder_name(&self) -> String {
        format!("models--{}", self.repo.replace('/', "--"))
    }

    /// `ORG/NAME` or `ORG/NAME@REVISION` when the revision is not the default, as the user would type it.
    pub fn display(&self) -> String {
        if self.revision == DEFAULT_REVISION {
            self.repo.clone()
        } else {
            format!("{}@{}", self.repo, self.revision)
        }
    }

    /// Whether the revision is a full commit hash (immutable: a cached snapshot of it never needs the network).
    pub fn is_commit(&self) -> bool {
        is_commit_hash(&self.revision)
    }
}

/// A full 40-character hexadecimal commit hash.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_and_revisions() {
        let m = ModelRef::parse("BAAI/bge-small-en-v1.5").unwrap();
        assert_eq!((m.repo.as_str(), m.revision.as_str()), ("BAAI/bge-small-en-v1.5", "main"));
        assert_eq!(m.folder_name(), "models--BAAI--bge-small-en-v1.5");
        assert_eq!(m.display(), "BAAI/bge-small-en-v1.5");
        let m = ModelRef::parse("sentence-transformers/all-MiniLM-L6-v2@refs/pr/1").unwrap();
        assert_eq!(m.revision, "refs/pr/1");
        assert_eq!(m.display(), "sentence-transformers/all-MiniLM-L6-v2@refs/pr/1");
        assert!(ModelRef::parse("a/b@0123456789abcdef0123456789abcdef01234567").unwrap().is_commit());
    }

    #[test]
    fn refuses_what_is_not_an_id() {
        for bad in
            ["", "name", "a/b/c", "/abs/path", "./x/y", "a/b@", "a /b", "a/-b", "a/b.", "a--x/b", "a/b..c", "~/m/x"]
        {
            let e = ModelRef::parse(bad).unwrap_err();
            assert!(matches!(e.kind, ErrorKind::InvalidId { .. }), "{bad}: {e}");
        }
    }
}
