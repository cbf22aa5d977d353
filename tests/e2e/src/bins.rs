//! Finding the workspace binaries the harness runs as processes.
//!
//! `tests/run.sh` runs `cargo build --workspace --bins` before the tests, so the relay, the agent
//! and the Odoo simulator sit in `target/<profile>/` next to the test executable (which itself lives
//! in `target/<profile>/deps/`) or next to the demo and bench binaries. Setting
//! `SCANBRIDGE_BIN_DIR` points the harness elsewhere (for example at a release build).

use std::path::{Path, PathBuf};

use crate::error::{HarnessError, Result};

/// The Odoo simulator's binary name.
pub const ODOO_SIM: &str = "scanbridge-odoo-sim";
/// The relay's binary name.
pub const RELAY: &str = "scanbridge-relay";
/// The agent's binary name.
pub const AGENT: &str = "scanbridge-agent";

/// The directory holding the workspace binaries: `SCANBRIDGE_BIN_DIR`, else the profile
/// directory of the running executable.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SCANBRIDGE_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().map_err(HarnessError::NoExeDir)?;
    Ok(profile_dir_of(&exe))
}

/// `target/<profile>/` for an executable in `target/<profile>/` or `target/<profile>/deps/`.
pub fn profile_dir_of(exe: &Path) -> PathBuf {
    let parent = exe.parent().unwrap_or_else(|| Path::new("."));
    if parent.file_name().is_some_and(|n| n == "deps") {
        parent.parent().unwrap_or(parent).to_path_buf()
    } else {
        parent.to_path_buf()
    }
}

/// The path of workspace binary `name`, or an error telling the reader how to build it.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::BinaryMissing {
            name: name.to_string(),
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_executable_in_deps_finds_binaries_one_level_up() {
        let dir = profile_dir_of(Path::new("/w/target/debug/deps/e2e-0123abcd"));
        assert_eq!(dir, PathBuf::from("/w/target/debug"));
    }

    #[test]
    fn a_binary_in_the_profile_dir_finds_its_siblings() {
        let dir = profile_dir_of(Path::new("/w/target/release/scanbridge-demo"));
        assert_eq!(dir, PathBuf::from("/w/target/release"));
    }
}
