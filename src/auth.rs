//! Passwords: the secret a server may require (`kvs-server --requirepass-file`) and a client
//! sends (native `Auth`, RESP `AUTH`).
//!
//! [`Password`] keeps its bytes to itself: its `Debug` shows neither the bytes nor their
//! length, it has no `Display`, and it is compared only by [`Password::matches`], in constant
//! time. Errors about a password ([`PasswordError`], [`read_password_file`]) describe it
//! without quoting it, so no log line, panic message or error can carry it.
//! [`PasswordParser`] gives command-line flags the same property.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use bytes::Bytes;

use crate::limits::PASSWORD_BYTES_MAX;
use crate::KvsError;

/// A password: 1 to [`PASSWORD_BYTES_MAX`] bytes, any bytes.
#[derive(Clone)]
pub struct Password(Bytes);

/// Why bytes cannot be a password. The sentence never quotes them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is empty")]
    Empty,
    #[error("the password is {len} bytes; the limit is {max} bytes")]
    TooLong { len: usize, max: usize },
}

impl Password {
    /// A password of these bytes, or why they cannot be one.
    pub fn new(bytes: impl Into<Bytes>) -> Result<Password, PasswordError> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(PasswordError::Empty);
        }
        if bytes.len() > PASSWORD_BYTES_MAX {
            return Err(PasswordError::TooLong {
                len: bytes.len(),
                max: PASSWORD_BYTES_MAX,
            });
        }
        Ok(Password(bytes))
    }

    /// The bytes, to send to a server.
    pub fn expose(&self) -> &Bytes {
        &self.0
    }

    /// Whether `candidate` is this password, in time that does not depend on where the two
    /// differ: every byte of this password is compared, whatever `candidate` holds, and the
    /// results are combined without a branch. The time depends on this password's length, which
    /// is the same for every attempt, so an attacker learns nothing from timing by varying the
    /// candidate, not even the length.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let stored: &[u8] = &self.0;
        let mut diff = stored.len() ^ candidate.len();
        for (i, &byte) in stored.iter().enumerate() {
            // A missing byte compares as 0; the length difference above already failed it.
            let other = candidate.get(i).copied().unwrap_or(0);
            diff |= usize::from(std::hint::black_box(byte ^ other));
        }
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// A password read from a file.
#[derive(Debug)]
pub struct PasswordFile {
    pub password: Password,
    /// The file's permission bits, when group or others may read it.
    pub loose_mode: Option<u32>,
}

/// Reads a password file: the whole content is the password, less one trailing newline
/// (`\n` or `\r\n`). An empty password, a file over the limit, or one that is not a regular
/// file is refused with a sentence naming the file. Never reads more than a few bytes past
/// [`PASSWORD_BYTES_MAX`].
pub fn read_password_file(path: &Path) -> Result<PasswordFile, KvsError> {
    let refuse = |why: String| {
        KvsError::Config(format!(
            "cannot use the password file {}: {why}",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(|e| refuse(e.to_string()))?;
    let meta = file.metadata().map_err(|e| refuse(e.to_string()))?;
    if !meta.is_file() {
        return Err(refuse("it is not a regular file".into()));
    }
    // Room for the longest password and its newline, and one byte more to tell it is over.
    let cap = PASSWORD_BYTES_MAX + 2;
    let mut bytes = Vec::with_capacity(cap + 1);
    file.take(cap as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(e.to_string()))?;
    if bytes.len() > cap {
        return Err(refuse(format!(
            "it holds more than {PASSWORD_BYTES_MAX} bytes, the longest password allowed"
        )));
    }
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    let password = Password::new(bytes).map_err(|e| refuse(e.to_string()))?;
    let mode = meta.permissions().mode() & 0o7777;
    Ok(PasswordFile {
        password,
        loose_mode: (mode & 0o044 != 0).then_some(mode),
    })
}

/// The clap value parser of a password flag: any bytes the shell passes, checked as
/// [`Password::new`] checks them, with an error that names the flag but never quotes the
/// value (clap's own errors would).
#[derive(Clone, Copy, Debug, Default)]
pub struct PasswordParser;

impl clap::builder::TypedValueParser for PasswordParser {
    type Value = Password;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Password, clap::Error> {
        use std::os::unix::ffi::OsStrExt;
        Password::new(Bytes::copy_from_slice(value.as_bytes())).map_err(|e| {
            let flag = arg.map_or_else(|| "a password flag".to_owned(), |a| format!("'{a}'"));
            let mut cmd = cmd.clone();
            cmd.error(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for {flag}: {e}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn passwords_are_one_to_the_limit_of_bytes() {
        // Guards against an empty password (which anyone matches) or an unbounded one.
        assert_eq!(
            Password::new(Bytes::new()).unwrap_err(),
            PasswordError::Empty
        );
        assert!(Password::new(vec![b'x'; PASSWORD_BYTES_MAX]).is_ok());
        assert_eq!(
            Password::new(vec![b'x'; PASSWORD_BYTES_MAX + 1]).unwrap_err(),
            PasswordError::TooLong {
                len: PASSWORD_BYTES_MAX + 1,
                max: PASSWORD_BYTES_MAX
            }
        );
        assert!(Password::new(&b"\0\xff any bytes"[..]).is_ok());
    }

    #[test]
    fn matches_only_the_exact_bytes() {
        // Guards against prefixes, extensions or case variants of the password being accepted.
        let p = Password::new("s3cret").unwrap();
        assert!(p.matches(b"s3cret"));
        for wrong in [
            &b""[..],
            b"s",
            b"s3cre",
            b"s3cret\0",
            b"s3cretx",
            b"S3cret",
            b"s3cres",
            b"t3cret",
        ] {
            assert!(!p.matches(wrong), "{wrong:?}");
        }
    }

    #[test]
    fn debug_shows_neither_the_bytes_nor_their_length() {
        // Guards against a password reaching a log line through a `{:?}` of a config or args.
        let p = Password::new("hunter2-secret").unwrap();
        let shown = format!("{p:?} {:?}", Some(p.clone()));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("14"), "{shown}");
        let err = Password::new(vec![b'q'; PASSWORD_BYTES_MAX + 1]).unwrap_err();
        assert!(!err.to_string().contains("qqq"));
    }

    #[test]
    fn flag_errors_name_the_flag_but_never_quote_the_password() {
        // Guards against clap printing a refused password on stderr, where logs are collected.
        let cmd = || {
            clap::Command::new("kvs-test").arg(
                clap::Arg::new("requirepass")
                    .long("requirepass")
                    .value_name("PASSWORD")
                    .value_parser(PasswordParser),
            )
        };
        let long = "z".repeat(PASSWORD_BYTES_MAX + 1);
        let err = cmd()
            .try_get_matches_from(["kvs-test", "--requirepass", &long])
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        let shown = err.to_string();
        assert!(shown.contains("--requirepass <PASSWORD>"), "{shown}");
        assert!(shown.contains("513 bytes; the limit is 512"), "{shown}");
        assert!(!shown.contains("zzz"), "{shown}");
        let err = cmd()
            .try_get_matches_from(["kvs-test", "--requirepass", ""])
            .unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let matches = cmd()
            .try_get_matches_from(["kvs-test", "--requirepass", "s3cret"])
            .unwrap();
        let ok: &Password = matches.get_one("requirepass").unwrap();
        assert!(ok.matches(b"s3cret"));
    }

    #[test]
    fn password_files_lose_one_trailing_newline_and_report_loose_modes() {
        // Guards against `echo pw > file` giving a password ending in a newline, or loose modes.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        for (content, expected) in [
            (&b"s3cret\n"[..], &b"s3cret"[..]),
            (b"s3cret\r\n", b"s3cret"),
            (b"s3cret", b"s3cret"),
            (b"s3cret\n\n", b"s3cret\n"),
            (b" spaced out \n", b" spaced out "),
        ] {
            std::fs::write(&path, content).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let read = read_password_file(&path).unwrap();
            assert!(read.password.matches(expected), "{content:?}");
            assert_eq!(read.loose_mode, None);
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_password_file(&path).unwrap().loose_mode, Some(0o644));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(read_password_file(&path).unwrap().loose_mode, Some(0o640));
    }

    #[test]
    fn password_files_that_cannot_hold_a_password_are_refused_by_name() {
        // Guards against starting with an empty password, or reading a huge file into memory.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        let refused = |content: &[u8]| {
            std::fs::write(&path, content).unwrap();
            read_password_file(&path).unwrap_err().to_string()
        };
        let e = refused(b"\n");
        assert!(e.contains("pw") && e.contains("empty"), "{e}");
        assert!(refused(b"").contains("empty"));
        let e = refused(&vec![b'x'; PASSWORD_BYTES_MAX + 3]);
        assert!(e.contains("more than 512 bytes"), "{e}");
        assert!(!e.contains("xxx"));
        let e = refused(&vec![b'x'; PASSWORD_BYTES_MAX + 1]);
        assert!(e.contains("513 bytes; the limit is 512"), "{e}");
        std::fs::write(&path, vec![b'x'; PASSWORD_BYTES_MAX]).unwrap();
        assert!(read_password_file(&path).is_ok());
        let e = read_password_file(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing") && e.contains("No such file"), "{e}");
        let e = read_password_file(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
