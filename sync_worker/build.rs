// Build script: records the git commit the worker is built from, for
// `sync_worker --version` and GET /service/version ("unknown" outside a git checkout).
use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn main() {
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SYNC_WORKER_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves: HEAD itself (branch switch) and the branch it points to.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        let dir = Path::new(&dir);
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            let common = git(&["rev-parse", "--git-common-dir"])
                .map(|c| dir.join(c))
                .unwrap_or_else(|| dir.to_path_buf());
            println!("cargo:rerun-if-changed={}", common.join(&branch).display());
            // A missing file counts as changed on every build (a full rebuild of the
            // worker each time): watch packed-refs only where it exists. When git packs
            // the branch's loose ref, that file goes and the script runs again.
            let packed = common.join("packed-refs");
            if packed.exists() {
                println!("cargo:rerun-if-changed={}", packed.display());
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
