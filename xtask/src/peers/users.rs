//! Looking up system users in `/etc/passwd`.

use std::fs;

use anyhow::{Context, Result};

/// The uid and primary gid of the user `name`.
pub(crate) fn lookup(name: &str) -> Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").context("failed to read /etc/passwd")?;
    let fields = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&name) && fields.len() > 3)
        .with_context(|| format!("/etc/passwd has no user `{name}`"))?;
    let uid = fields[2]
        .parse()
        .with_context(|| format!("/etc/passwd has an invalid uid for `{name}`"))?;
    let gid = fields[3]
        .parse()
        .with_context(|| format!("/etc/passwd has an invalid gid for `{name}`"))?;
    Ok((uid, gid))
}
