//! Reading delivered messages from a Maildir.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::PeersError;

/// Reads every message in `new/` and `cur/` of the Maildir at `dir`,
/// ordered by file name. The peers' delivery script names each file
/// `<seconds>.M<nanoseconds>P<pid>.<host>`, so this is delivery order. A
/// Maildir that does not exist yet contains no messages.
///
/// Files appear in `new/` only by rename from `tmp/`, so each one read is
/// complete.
pub(crate) fn read_messages(dir: &Path) -> Result<Vec<Vec<u8>>, PeersError> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for sub in ["new", "cur"] {
        let sub_dir = dir.join(sub);
        let entries = match fs::read_dir(&sub_dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(io_error(&sub_dir, source)),
        };
        for entry in entries {
            let entry = entry.map_err(|source| io_error(&sub_dir, source))?;
            files.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ));
        }
    }
    files.sort();

    files
        .into_iter()
        .map(|(_, path)| fs::read(&path).map_err(|source| io_error(&path, source)))
        .collect()
}

fn io_error(path: &Path, source: io::Error) -> PeersError {
    PeersError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_new_and_cur_in_name_order() {
        let dir = tempfile::tempdir().expect("temporary directory");
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir(dir.path().join(sub)).expect("create subdirectory");
        }
        fs::write(dir.path().join("new/200.M1P1.host"), b"second").unwrap();
        fs::write(dir.path().join("cur/100.M1P1.host:2,S"), b"first").unwrap();
        fs::write(dir.path().join("tmp/300.M1P1.host"), b"partial").unwrap();

        let messages = read_messages(dir.path()).expect("readable Maildir");
        assert_eq!(messages, vec![b"first".to_vec(), b"second".to_vec()]);
    }

    #[test]
    fn absent_maildir_is_empty() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let messages = read_messages(&dir.path().join("nobody")).expect("no error");
        assert!(messages.is_empty());
    }
}
