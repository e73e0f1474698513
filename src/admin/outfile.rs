//! The file an export or backup is written to: owner-only from its first byte, whatever the
//! umask or an older file's mode, and complete or absent: the lines go to a temporary file
//! beside it, renamed over the target only once everything arrived and was synced, so an
//! interrupted backup never leaves a truncated file under the name a restore would use.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub struct OutFile {
    path: PathBuf,
    partial: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl OutFile {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let name = path.file_name().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{}: not a file name", path.display()),
            )
        })?;
        let mut partial_name = std::ffi::OsString::from(".");
        partial_name.push(name);
        partial_name.push(".partial");
        let partial = path.with_file_name(partial_name);
        // Left by an interrupted run of ours; `create_new` below must not trust its mode.
        match std::fs::remove_file(&partial) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(named(&partial, e)),
            _ => {}
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(|e| named(&partial, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            partial,
            writer: Some(BufWriter::with_capacity(256 * 1024, file)),
        })
    }

    /// Appends one line (its newline added).
    pub fn line(&mut self, line: &str) -> std::io::Result<()> {
        let partial = &self.partial;
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| named(partial, std::io::ErrorKind::BrokenPipe.into()))?;
        w.write_all(line.as_bytes())
            .and_then(|()| w.write_all(b"\n"))
            .map_err(|e| named(partial, e))
    }

    /// Syncs the lines to disk and gives the file its name.
    pub fn finish(mut self) -> std::io::Result<()> {
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        let file = w
            .into_inner()
            .map_err(|e| named(&self.partial, e.into_error()))?;
        file.sync_all().map_err(|e| named(&self.partial, e))?;
        std::fs::rename(&self.partial, &self.path).map_err(|e| named(&self.path, e))?;
        // The new name is durable only once its directory is; best effort, the data is synced.
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

fn named(path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_file_is_owner_only_and_appears_only_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.jsonl");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

        let mut f = OutFile::create(&path).unwrap();
        f.line("one").unwrap();
        drop(f);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old", "abandoned");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no leftovers"
        );

        let mut f = OutFile::create(&path).unwrap();
        f.line("one").unwrap();
        f.line("two").unwrap();
        f.finish().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
