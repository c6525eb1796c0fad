//! `boltbox backup --to DIR` and `boltbox restore` as an operator runs them, on a stopped node's
//! data dir (a real store and seed; no chain needed): the backup is verified and named, the
//! restore shows the backup's facts, needs the confirmation, refuses a data dir that is not
//! older, a seed file others can read, a wrong seed and an altered file, each with a non-zero
//! exit and a specific message.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use boltbox_node::backup::read_header;
use boltbox_node::node::STORE_FILE;
use boltbox_node::{Seed, Store};
use ldk_node::lightning::util::persist::KVStoreSync;

/// A config for a regtest node keeping its data in `data_dir` (the chain is never contacted).
fn config(dir: &Path, name: &str, data_dir: &Path) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[node]\nnetwork = \"regtest\"\ndata_dir = \"{}\"\n[node.chain]\nsource = \"bitcoind\"\n\
             rpc_user = \"u\"\nrpc_password = \"secret-password\"\n[board]\nboard = \"sim\"\n",
            data_dir.display()
        ),
    )
    .expect("config");
    path
}

fn boltbox(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_boltbox"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn boltbox");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("boltbox output")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A stopped node: a seed and a store with `entries` entries.
fn node_data(data_dir: &Path, seed: &Seed, entries: usize) {
    seed.store(data_dir).expect("seed");
    let store = Store::open(&data_dir.join(STORE_FILE)).expect("store");
    for i in 0..entries {
        KVStoreSync::write(&store, "monitors", "", &format!("m{i}"), vec![i as u8; 2048]).expect("write");
    }
    store.close();
}

#[test]
fn backup_then_restore_with_every_refusal_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = Seed::generate();
    let source = dir.path().join("source");
    node_data(&source, &seed, 100);
    let source_config = config(dir.path(), "source", &source);
    let out = dir.path().join("out");

    // Offline backup (no service runs): a verified file with the plain header's facts.
    let run = boltbox(&["backup", "--to", path_str(&out), "--config", path_str(&source_config)], "");
    assert!(run.status.success(), "{}", text(&run));
    let files: Vec<PathBuf> =
        std::fs::read_dir(&out).expect("out").map(|e| e.expect("entry").path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    let node_id = seed.node_id(boltbox_node::Network::Regtest).expect("node id");
    let name = file.file_name().expect("name").to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("boltbox-regtest-{}-", node_id.get(..8).unwrap_or_default())),
        "{name}"
    );
    let bytes = std::fs::read(file).expect("read");
    let (header, _) = read_header(&bytes).expect("header");
    assert_eq!(header.commit_counter, 100);
    assert!(!bytes.windows(15).any(|w| w == b"secret-password"), "no secret in the file");
    assert!(text(&run).contains("store commit 100"), "{}", text(&run));
    assert!(source.join("last-backup.json").is_file(), "the last backup is recorded");

    // The seed file must be private.
    let seed_file = dir.path().join("words");
    std::fs::write(&seed_file, seed.words().join(" ")).expect("words");
    std::fs::set_permissions(&seed_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let target = dir.path().join("target");
    let target_config = config(dir.path(), "target", &target);
    let restore = |stdin: &str, extra: &[&str]| {
        let mut args = vec!["restore", "--backup", path_str(file), "--config", path_str(&target_config)];
        args.extend_from_slice(extra);
        boltbox(&args, stdin)
    };
    let run = restore("", &["--seed-file", path_str(&seed_file), "--yes"]);
    assert!(!run.status.success());
    assert!(text(&run).contains("0600"), "{}", text(&run));
    std::fs::set_permissions(&seed_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    // Not confirmed: nothing is written. The facts and the warning were shown first.
    let run = restore("no\n", &["--seed-file", path_str(&seed_file)]);
    assert!(!run.status.success());
    let said = text(&run);
    for fact in [node_id.as_str(), "store commit counter 100", "ago", "force-close", "not confirmed"] {
        assert!(said.contains(fact), "{fact:?} missing from:\n{said}");
    }
    assert!(!target.join(STORE_FILE).exists());

    // A wrong seed, typed at the prompt.
    let other = Seed::generate();
    let run = restore(&format!("{}\nrestore\n", other.words().join(" ")), &[]);
    assert!(!run.status.success());
    assert!(text(&run).contains("wrong seed"), "{}", text(&run));

    // An altered file.
    let mut altered = bytes.clone();
    let last = altered.len() - 100;
    altered[last] ^= 0x40;
    let altered_path = dir.path().join("altered.bbk");
    std::fs::write(&altered_path, &altered).expect("write");
    let run = boltbox(
        &[
            "restore",
            "--backup",
            path_str(&altered_path),
            "--config",
            path_str(&target_config),
            "--seed-file",
            path_str(&seed_file),
            "--yes",
        ],
        "",
    );
    assert!(!run.status.success());
    assert!(text(&run).contains("altered"), "{}", text(&run));

    // The seed typed at the prompt and "restore" typed: restored.
    let run = restore(&format!("{}\nrestore\n", seed.words().join(" ")), &[]);
    assert!(run.status.success(), "{}", text(&run));
    assert_eq!(Seed::load(&target).expect("load").expect("seed").words(), seed.words());
    let store = Store::open(&target.join(STORE_FILE)).expect("restored store");
    assert_eq!(store.commit_counter().expect("counter"), 100);
    assert_eq!(store.snapshot().expect("snapshot").entries.len(), 100);
    store.close();

    // Again: the data dir is no longer older than the backup.
    let run = restore("", &["--seed-file", path_str(&seed_file), "--yes"]);
    assert!(!run.status.success());
    assert!(text(&run).contains("not older"), "{}", text(&run));
}
