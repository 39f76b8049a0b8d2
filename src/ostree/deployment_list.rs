//! Changes to the deployment list, each under the sysroot lock, as aktualizr(-lite) makes
//! them: [`deploy`] a pulled commit as the new default, [`make_default`] (the rollback),
//! [`remove_deployment`] (a target that failed), [`cleanup`] after a successful update.

use anyhow::{bail, Context as _};
use ostree::{gio, glib};

use super::{
    booted_deployment, commit_complete, info, is_commit_checksum, is_no_space, open_sysroot,
    os_deployments, DeploymentInfo, SysrootLock,
};
use crate::config::Pacman;
use crate::error::{Code, Error};

/// The deployment whose `/etc` and kernel arguments the new one inherits: the running one
/// when there is one (as `ostree admin upgrade` and aktualizr do), else libostree's choice,
/// which on a sysroot nobody booted is the default deployment of the OS.
fn merge_deployment(
    sysroot: &ostree::Sysroot,
    pacman: &Pacman,
) -> anyhow::Result<Option<ostree::Deployment>> {
    if let Some(d) = booted_deployment(sysroot, pacman)? {
        if d.osname() == pacman.os.as_str() {
            return Ok(Some(d));
        }
    }
    Ok(sysroot.merge_deployment(Some(&pacman.os)))
}

/// Origin of the new deployment: the merge deployment's (keys other tools put there
/// survive), minus its transient state (`unlocked`, `override-commit`), with `refspec` set
/// to the checksum as aktualizr does (no ref ever names the commit: nothing to resolve).
fn new_origin(
    sysroot: &ostree::Sysroot,
    merge: Option<&ostree::Deployment>,
    commit: &str,
) -> glib::KeyFile {
    let Some(merged) = merge.and_then(|m| m.origin()) else {
        return sysroot.origin_new_from_refspec(commit);
    };
    let copy = glib::KeyFile::new();
    if copy
        .load_from_data(&merged.to_data(), glib::KeyFileFlags::KEEP_COMMENTS)
        .is_err()
    {
        return sysroot.origin_new_from_refspec(commit);
    }
    ostree::Deployment::origin_remove_transient_state(&copy);
    copy.set_string("origin", "refspec", commit);
    copy
}

/// Deploy `commit` (already in the sysroot repo) for `pacman.os` and make it the default,
/// under the sysroot lock. As aktualizr: `/etc` merged from, and kernel arguments copied
/// from, the merge deployment (the booted one; the default one on a sysroot nobody booted);
/// origin refspec = the checksum; `simple_write_deployment` with no flags, which keeps the
/// booted (or, unbooted, the merge) deployment as the rollback, drops the other deployments
/// of this OS (pinned ones and other OSes stay) and prunes the repo. libostree syncs the
/// filesystems before it returns. A full disk while deploying is [`Code::NoSpace`].
///
/// Idempotent: when the default deployment already is `commit`, it is returned as is.
pub fn deploy(pacman: &Pacman, commit: &str) -> crate::Result<DeploymentInfo> {
    if !is_commit_checksum(commit) {
        return Err(anyhow::anyhow!("{commit:?} is not an OSTree commit checksum").into());
    }
    let root = &pacman.sysroot;
    let sysroot = open_sysroot(root)?;
    let _lock = SysrootLock::acquire(&sysroot, root)?;
    // Reload under the lock: the list may have changed since we opened it.
    sysroot
        .load(gio::Cancellable::NONE)
        .with_context(|| format!("loading the OSTree sysroot at {}", root.display()))?;
    let repo = sysroot.repo();
    if !commit_complete(&repo, &root.join("ostree/repo"), commit)? {
        return Err(anyhow::anyhow!(
            "commit {commit} is not (completely) in the repo of {}: pull it first",
            root.display()
        )
        .into());
    }
    // Already the default (a rerun after a power cut between deploying and recording it):
    // deploying again would make the fresh deployment the merge one and drop the rollback.
    if let Some(first) = os_deployments(&sysroot, &pacman.os).into_iter().next() {
        if first.csum() == commit {
            tracing::info!(
                "commit {commit} is already the default deployment in {}",
                root.display()
            );
            return Ok(info(&sysroot, root, &first));
        }
    }
    let merge = merge_deployment(&sysroot, pacman)?;
    let origin = new_origin(&sysroot, merge.as_ref(), commit);
    let kargs: Vec<String> = merge
        .as_ref()
        .and_then(|m| m.bootconfig())
        .and_then(|b| b.get("options"))
        .map(|o| o.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let kargs: Vec<&str> = kargs.iter().map(String::as_str).collect();
    let fail = |what: &str, e: glib::Error| -> Error {
        let code = if is_no_space(&e) {
            Code::NoSpace
        } else {
            Code::Internal
        };
        Error::caused(
            code,
            format!("{what} commit {commit} in {}", root.display()),
            e,
        )
    };
    // Leftovers of an interrupted deploy would otherwise be counted against the disk.
    sysroot
        .prepare_cleanup(gio::Cancellable::NONE)
        .map_err(|e| fail("cleaning up before deploying", e))?;
    let opts = ostree::SysrootDeployTreeOpts {
        // Some(empty) would mean "no kernel arguments"; None lets libostree copy them.
        override_kernel_argv: (!kargs.is_empty()).then_some(&kargs[..]),
        ..Default::default()
    };
    let new = sysroot
        .deploy_tree_with_options(
            Some(&pacman.os),
            commit,
            Some(&origin),
            merge.as_ref(),
            Some(&opts),
            gio::Cancellable::NONE,
        )
        .map_err(|e| fail("deploying", e))?;
    sysroot
        .simple_write_deployment(
            Some(&pacman.os),
            &new,
            merge.as_ref(),
            ostree::SysrootSimpleWriteDeploymentFlags::NONE,
            gio::Cancellable::NONE,
        )
        .map_err(|e| fail("writing the boot entries for", e))?;
    sysroot
        .load(gio::Cancellable::NONE)
        .with_context(|| format!("reloading the OSTree sysroot at {}", root.display()))?;
    let written = sysroot
        .deployments()
        .into_iter()
        .find(|d| {
            d.osname() == pacman.os.as_str()
                && d.csum() == new.csum()
                && d.deployserial() == new.deployserial()
        })
        .with_context(|| {
            format!(
                "deployment {commit}.{} missing from {} after writing it",
                new.deployserial(),
                root.display()
            )
        })?;
    Ok(info(&sysroot, root, &written))
}

/// Put the first deployment of `csum` first (the next boot starts it), keeping all others
/// in their order: the rollback when apps fail on the new rootfs, like `rpm-ostree
/// rollback`. No-op when it already is the default; error when no deployment has `csum`.
pub fn make_default(pacman: &Pacman, csum: &str) -> anyhow::Result<()> {
    let root = &pacman.sysroot;
    let sysroot = open_sysroot(root)?;
    let _lock = SysrootLock::acquire(&sysroot, root)?;
    sysroot.load(gio::Cancellable::NONE)?;
    let all = sysroot.deployments();
    let Some(idx) = all
        .iter()
        .position(|d| d.osname() == pacman.os.as_str() && d.csum() == csum)
    else {
        bail!(
            "no deployment of commit {csum} for {:?} in {}",
            pacman.os,
            root.display()
        );
    };
    if idx == 0 {
        return Ok(());
    }
    let mut order = all.clone();
    let chosen = order.remove(idx);
    order.insert(0, chosen);
    sysroot
        .write_deployments(&order, gio::Cancellable::NONE)
        .with_context(|| {
            format!(
                "making the deployment of {csum} the default in {}",
                root.display()
            )
        })
}

/// Drop every deployment of `csum` (a target that failed) and prune what only it used.
/// Refuses to drop the deployment that counts as booted. No deployment of `csum`: nothing to
/// do (a rerun after a power cut).
pub fn remove_deployment(pacman: &Pacman, csum: &str) -> anyhow::Result<()> {
    let root = &pacman.sysroot;
    let sysroot = open_sysroot(root)?;
    let _lock = SysrootLock::acquire(&sysroot, root)?;
    sysroot.load(gio::Cancellable::NONE)?;
    let booted = booted_deployment(&sysroot, pacman)?;
    let all = sysroot.deployments();
    let drop = |d: &ostree::Deployment| d.osname() == pacman.os.as_str() && d.csum() == csum;
    if let Some(b) = &booted {
        if drop(b) && all.iter().any(|d| d.equal(b)) {
            bail!(
                "refusing to remove the deployment of {csum} from {}: it is the one running",
                root.display()
            );
        }
    }
    let keep: Vec<ostree::Deployment> = all.iter().filter(|d| !drop(d)).cloned().collect();
    if keep.len() == all.len() {
        return Ok(());
    }
    sysroot
        .write_deployments_with_options(
            &keep,
            &ostree::SysrootWriteDeploymentsOpts { do_postclean: true },
            gio::Cancellable::NONE,
        )
        .with_context(|| format!("removing the deployment of {csum} from {}", root.display()))
}

/// After a successful update, what OSTree expects to remain: the default, the running and
/// its rollback (the next one in boot order) deployments of this OS, plus pinned ones and
/// other OSes; then `ostree_sysroot_cleanup` (old boot versions, deployment directories no
/// longer listed, repo objects nothing references, stale transaction directories).
pub fn cleanup(pacman: &Pacman) -> anyhow::Result<()> {
    let root = &pacman.sysroot;
    let sysroot = open_sysroot(root)?;
    let _lock = SysrootLock::acquire(&sysroot, root)?;
    sysroot.load(gio::Cancellable::NONE)?;
    let booted = booted_deployment(&sysroot, pacman)?;
    let all = sysroot.deployments();
    let mine = os_deployments(&sysroot, &pacman.os);
    let mut wanted: Vec<&ostree::Deployment> = mine.iter().take(1).collect();
    if let Some(b) = &booted {
        if let Some(pos) = mine.iter().position(|d| d.equal(b)) {
            wanted.push(&mine[pos]);
            if let Some(rollback) = mine.get(pos + 1) {
                wanted.push(rollback);
            }
        }
    }
    let keep: Vec<ostree::Deployment> = all
        .iter()
        .filter(|d| {
            d.osname() != pacman.os.as_str() || d.is_pinned() || wanted.iter().any(|w| w.equal(d))
        })
        .cloned()
        .collect();
    let ctx = || format!("cleaning up the OSTree sysroot at {}", root.display());
    if keep.len() != all.len() {
        sysroot
            .write_deployments_with_options(
                &keep,
                &ostree::SysrootWriteDeploymentsOpts { do_postclean: true },
                gio::Cancellable::NONE,
            )
            .with_context(ctx)?;
    } else {
        sysroot.cleanup(gio::Cancellable::NONE).with_context(ctx)?;
    }
    Ok(())
}
