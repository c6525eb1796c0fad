use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ldk_node::lightning::util::persist::KVStoreSync;

use super::*;
use crate::config::{ChainSource, NodeConfig};
use crate::datadir::STORE_FILE;
use crate::seed::Seed;
use crate::store::{Snapshot, Store};
use proptest::prelude::*;

// The BIP39 test vector's 24-word mnemonic (all-zero entropy), and another valid one.
const ABANDON: &str = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon \
    abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon \
    abandon art";
const ZOO: &str = "zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo \
    zoo vote";

struct Rig {
    dir: tempfile::TempDir,
    store: Store,
    seed: Seed,
    config: NodeConfig,
    node_id: String,
    runtime: tokio::runtime::Runtime,
}

impl Rig {
    /// A store with `values` entries of 1 KiB (so several 64 KiB chunks) and a regtest config
    /// with an RPC password.
    fn new(values: usize) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("node.redb")).expect("open");
        for i in 0..values {
            let value: Vec<u8> = (0..1024).map(|j| (i * 7 + j) as u8).collect();
            KVStoreSync::write(&store, "monitors", "", &format!("key{i}"), value).expect("write");
        }
        KVStoreSync::write(&store, "", "", "manager", b"the channel manager".to_vec()).expect("write");
        let seed = Seed::from_words(ABANDON).expect("seed");
        let config = NodeConfig {
            network: Network::Regtest,
            data_dir: dir.path().join("data"),
            chain: ChainSource::Bitcoind {
                rpc_host: "127.0.0.1".into(),
                rpc_port: Some(18443),
                rpc_user: Some("alice".into()),
                rpc_password: Some("hunter2-secret".into()),
                rpc_cookie: None,
            },
            ..NodeConfig::default()
        };
        let node_id = seed.node_id(Network::Regtest).expect("node id");
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("runtime");
        Rig { dir, store, seed, config, node_id, runtime }
    }

    fn workers(&self) -> Workers {
        Workers(self.runtime.handle().clone())
    }

    fn source(&self) -> BackupSource<'_> {
        BackupSource {
            store: &self.store,
            seed: &self.seed,
            config: &self.config,
            node_id: &self.node_id,
            workers: self.workers(),
        }
    }

    /// A backup file's bytes, and the snapshot in it.
    fn backup_bytes(&self) -> (Vec<u8>, Snapshot) {
        let snapshot = self.store.snapshot().expect("snapshot");
        let lineage_id = self.store.identity().expect("identity").lineage_id;
        let input = BackupInput {
            seed: &self.seed,
            config: &self.config,
            node_id: &self.node_id,
            lineage_id: &lineage_id,
            snapshot: &snapshot,
            created_at: 1_700_000_000,
        };
        let mut out = Vec::new();
        let mut last = 0;
        let (header, written) = write_backup(&input, &mut out, &self.workers(), &mut |p| {
            assert!(p >= last, "progress goes forward");
            last = p;
        })
        .expect("write");
        assert_eq!(last, 100);
        assert_eq!(written, out.len() as u64);
        assert_eq!(header.commit_counter, snapshot.commit_counter);
        (out, snapshot)
    }

    fn open(&self, bytes: Vec<u8>, seed: &Seed) -> Result<BackupContents, BackupError> {
        open_backup(Arc::new(bytes), seed, &self.workers(), &mut |_| {})
    }
}

/// Polls `condition` until it holds; fails after ten seconds.
fn wait_for(condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "timed out");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_backup_round_trips_with_a_plain_header_and_no_secrets() {
    let rig = Rig::new(300);
    let (bytes, snapshot) = rig.backup_bytes();
    let (header, _) = read_header(&bytes).expect("header");
    assert_eq!(header.network, Network::Regtest);
    assert_eq!(header.node_id, rig.node_id);
    assert_eq!(header.commit_counter, rig.store.commit_counter().expect("counter"));
    assert_eq!(header.created_at, 1_700_000_000);
    assert_eq!(header.boltbox_version, env!("CARGO_PKG_VERSION"));
    assert!(header.chunks() > 4, "several chunks: {}", header.chunks());

    let contents = rig.open(bytes.clone(), &rig.seed).expect("open");
    assert_eq!(contents.header, header);
    assert_eq!(contents.snapshot, snapshot);
    assert_eq!(contents.snapshot.entries.len(), 301);
    assert_eq!(contents.config, rig.config.without_secrets());
    assert!(matches!(&contents.config.chain, ChainSource::Bitcoind { rpc_password: None, .. }));

    // Neither the password, nor the seed, nor the plaintext values are anywhere in the file.
    assert!(!contains(&bytes, b"hunter2"));
    assert!(!contains(&bytes, b"abandon"));
    assert!(!contains(&bytes, &rig.seed.to_seed_bytes()[..16]));
    assert!(!contains(&bytes, b"the channel manager"));
}

#[test]
fn an_empty_store_backs_up_as_one_chunk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rig = Rig { store: Store::open(&dir.path().join("empty.redb")).expect("open"), ..Rig::new(0) };
    let (bytes, snapshot) = rig.backup_bytes();
    assert!(snapshot.entries.is_empty());
    let contents = rig.open(bytes, &rig.seed).expect("open");
    assert_eq!(contents.header.chunks(), 1);
    assert_eq!(contents.snapshot, snapshot);
}

#[test]
fn every_flipped_byte_is_rejected() {
    let rig = Rig::new(200);
    let (bytes, _) = rig.backup_bytes();
    let (_, prefix_len) = read_header(&bytes).expect("header");
    // Every byte of the plain prefix, and bytes spread over the body (first, last, a stride).
    let mut positions: Vec<usize> = (0..prefix_len).collect();
    positions.extend((prefix_len..bytes.len()).step_by(797));
    positions.push(bytes.len() - 1);
    for at in positions {
        let mut bad = bytes.clone();
        bad[at] ^= 0x01;
        let err = rig.open(bad, &rig.seed).expect_err(&format!("a flipped byte at {at} is accepted"));
        if at >= prefix_len {
            assert!(matches!(err, BackupError::Tampered { .. }), "body byte {at}: {err}");
        }
    }
}

#[test]
fn truncation_and_extra_bytes_are_rejected_with_the_sizes() {
    let rig = Rig::new(200);
    let (bytes, _) = rig.backup_bytes();
    let (header, prefix_len) = read_header(&bytes).expect("header");
    let chunk = header.chunk_size as usize + 16;
    for len in [0, 5, 12, prefix_len - 1, prefix_len, prefix_len + chunk, bytes.len() - 1] {
        let err = rig.open(bytes[..len].to_vec(), &rig.seed).expect_err("truncated");
        match err {
            BackupError::Truncated { found, .. } => assert_eq!(found, len as u64),
            BackupError::NotABackup if len < 8 => {}
            other => panic!("cut to {len}: {other}"),
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(rig.open(longer, &rig.seed), Err(BackupError::TrailingData { .. })));
}

#[test]
fn a_consistently_shortened_or_reordered_body_fails_authentication() {
    let rig = Rig::new(200);
    let (bytes, _) = rig.backup_bytes();
    let (header, prefix_len) = read_header(&bytes).expect("header");
    let chunk = header.chunk_size as usize + 16;

    // Drop the last chunk and make the header say so: the header is the AAD, so chunk 0 fails.
    let mut short = header.clone();
    let last_plain = header.plain_bytes - u64::from(header.chunk_size) * (header.chunks() - 1);
    short.plain_bytes -= last_plain;
    let json = serde_json::to_vec(&short).expect("json");
    let mut forged = Vec::new();
    forged.extend_from_slice(&bytes[..10]);
    forged.extend_from_slice(&(json.len() as u32).to_be_bytes());
    forged.extend_from_slice(&json);
    let body_end = prefix_len + (header.chunks() as usize - 1) * chunk;
    forged.extend_from_slice(&bytes[prefix_len..body_end]);
    assert!(matches!(rig.open(forged, &rig.seed), Err(BackupError::Tampered { chunk: 0, .. })));

    // Swap chunks 0 and 1.
    let mut swapped = bytes.clone();
    let (a, b) = (prefix_len, prefix_len + chunk);
    swapped[a..a + chunk].copy_from_slice(&bytes[b..b + chunk]);
    swapped[b..b + chunk].copy_from_slice(&bytes[a..a + chunk]);
    assert!(matches!(rig.open(swapped, &rig.seed), Err(BackupError::Tampered { chunk: 0, .. })));
}

#[test]
fn a_wrong_seed_wrong_magic_or_newer_version_is_named() {
    let rig = Rig::new(10);
    let (bytes, _) = rig.backup_bytes();
    let other = Seed::from_words(ZOO).expect("seed");
    let err = rig.open(bytes.clone(), &other).expect_err("wrong seed");
    assert!(matches!(err, BackupError::WrongSeed), "{err}");
    assert!(err.to_string().contains("different seed"));

    let mut magic = bytes.clone();
    magic[..8].copy_from_slice(b"PK\x03\x04zip!");
    assert!(matches!(rig.open(magic, &rig.seed), Err(BackupError::NotABackup)));

    let mut version = bytes.clone();
    version[8..10].copy_from_slice(&3u16.to_be_bytes());
    let err = rig.open(version, &rig.seed).expect_err("version 3");
    assert!(matches!(err, BackupError::UnsupportedVersion { found: 3, supported: 2 }), "{err}");
}

#[test]
fn a_backup_dated_wrong_before_time_sync_is_still_the_newest_state_and_is_kept() {
    let rig = Rig::new(5);
    let dir = rig.dir.path().join("stick/boltbox-backups");
    let tick = |n: u8| KVStoreSync::write(&rig.store, "", "", "tick", vec![n]).expect("write");
    let first = backup_to_dir(&rig.source(), &dir, 10, &mut |_| {}).expect("backup").path;
    tick(1);
    let second = backup_to_dir(&rig.source(), &dir, 10, &mut |_| {}).expect("backup").path;
    tick(2);
    // After a reboot, before time sync (a Pi has no real-time clock): the newest state, dated
    // years back, so its name sorts first.
    let (bytes, snapshot) = rig.backup_bytes();
    let (header, _) = read_header(&bytes).expect("header");
    assert!(header.created_at < 1_800_000_000 && snapshot.commit_counter > 0);
    let early = dir.join(file_name(&header));
    std::fs::write(&early, &bytes).expect("write");
    assert_eq!(
        backups_in(&dir, Network::Regtest, &rig.node_id).expect("list"),
        vec![first.clone(), second.clone(), early.clone()],
        "ordered by commit counter, not by the dates in the names"
    );
    // A backup of another node, named like this node's, is not this node's to list or prune.
    let mut foreign = bytes.clone();
    let json_at = foreign.windows(rig.node_id.len()).position(|w| w == rig.node_id.as_bytes()).expect("id");
    foreign[json_at] = if foreign[json_at] == b'0' { b'1' } else { b'0' };
    let foreign_path = dir.join(file_name(&header).replace(".bbk", "-9.bbk"));
    std::fs::write(&foreign_path, &foreign).expect("write");

    // Keeping two after the next backup keeps the two newest states: the early-dated one too.
    tick(3);
    let latest = backup_to_dir(&rig.source(), &dir, 2, &mut |_| {}).expect("backup");
    assert_eq!(latest.pruned, vec![first, second]);
    assert_eq!(backups_in(&dir, Network::Regtest, &rig.node_id).expect("list"), vec![early, latest.path]);
    assert!(foreign_path.exists(), "another node's file is left alone");
}

#[test]
fn backups_in_a_directory_are_verified_named_private_and_pruned() {
    let rig = Rig::new(50);
    let dir = rig.dir.path().join("stick/boltbox-backups");
    let mut written = Vec::new();
    for _ in 0..4 {
        let mut progress = Vec::new();
        let w = backup_to_dir(&rig.source(), &dir, 2, &mut |p| progress.push(p)).expect("backup");
        assert_eq!(progress.first(), Some(&0));
        assert_eq!(progress.last(), Some(&100));
        assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
        written.push(w);
        // Another commit, so that each backup holds a newer state.
        KVStoreSync::write(&rig.store, "", "", "tick", vec![written.len() as u8]).expect("write");
    }
    let w = &written[3];
    let name = w.path.file_name().expect("name").to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("boltbox-regtest-{}-", rig.node_id.get(..8).unwrap_or_default())),
        "{name}"
    );
    assert_eq!(w.header.lineage_id, Some(rig.store.identity().expect("identity").lineage_id));
    assert!(name.ends_with(".bbk"), "{name}");
    let mode = std::fs::metadata(&w.path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(w.bytes, std::fs::metadata(&w.path).expect("meta").len());

    // The newest two remain, in order; no temporary file is left.
    let left = backups_in(&dir, Network::Regtest, &rig.node_id).expect("list");
    assert_eq!(left, vec![written[2].path.clone(), written[3].path.clone()]);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(!written[3].pruned.is_empty() && written[3].prune_error.is_none());
    // And the newest holds the latest state.
    let contents = rig.open(std::fs::read(&w.path).expect("read"), &rig.seed).expect("open");
    assert_eq!(contents.header.commit_counter, w.header.commit_counter);
    assert!(written.windows(2).all(|p| p[0].header.commit_counter < p[1].header.commit_counter));
}

#[test]
fn leftover_temporary_files_are_removed_and_other_nodes_backups_kept() {
    let rig = Rig::new(5);
    let dir = rig.dir.path().join("stick");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let leftover = dir
        .join(format!(".boltbox-regtest-{}-20200101T000000Z.tmp", rig.node_id.get(..8).unwrap_or_default()));
    std::fs::write(&leftover, b"partial").expect("leftover");
    let foreign = dir.join("boltbox-regtest-ffffffff-20200101T000000Z.bbk");
    std::fs::write(&foreign, b"another node's").expect("foreign");
    backup_to_dir(&rig.source(), &dir, 1, &mut |_| {}).expect("backup");
    assert!(!leftover.exists());
    assert!(foreign.exists(), "another node's backups are not ours to prune");
}

#[test]
fn backing_up_while_writers_commit_captures_one_committed_state() {
    let rig = Rig::new(100);
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let writer = {
        let (store, stop, commits) = (rig.store.clone(), Arc::clone(&stop), Arc::clone(&commits));
        std::thread::spawn(move || {
            // Both keys in each round hold the round number: a state between two writes
            // of a round shows them one apart, never more, never key b ahead of key a.
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                KVStoreSync::write(&store, "w", "", "a", round.to_be_bytes().to_vec()).expect("write a");
                KVStoreSync::write(&store, "w", "", "b", round.to_be_bytes().to_vec()).expect("write b");
                commits.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    wait_for(|| commits.load(Ordering::Relaxed) > 10);
    let dir = rig.dir.path().join("out");
    let before = commits.load(Ordering::Relaxed);
    let w = backup_to_dir(&rig.source(), &dir, 3, &mut |_| {}).expect("backup");
    assert!(commits.load(Ordering::Relaxed) > before, "writers went on during the backup");
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    let contents = rig.open(std::fs::read(&w.path).expect("read"), &rig.seed).expect("open");
    let value = |key: &str| {
        let e = contents.snapshot.entries.iter().find(|e| e.primary == "w" && e.key == key).expect("key");
        u64::from_be_bytes(e.value.as_slice().try_into().expect("8 bytes"))
    };
    let (a, b) = (value("a"), value("b"));
    assert!(a == b || a == b + 1, "a = {a}, b = {b}: not one committed state");
}

#[test]
fn restore_writes_seed_and_store_and_refuses_a_data_dir_that_is_not_older() {
    let rig = Rig::new(20);
    let (bytes, snapshot) = rig.backup_bytes();
    let contents = rig.open(bytes, &rig.seed).expect("open");
    let data = rig.dir.path().join("restored");

    let report = restore_backup(&data, Network::Regtest, &contents, &rig.seed).expect("restore");
    assert_eq!(report.entries, 21);
    assert_eq!(report.kept_older_store, None);
    let store = Store::open_existing(&data.join(STORE_FILE)).expect("open restored");
    assert_eq!(store.snapshot().expect("snapshot"), snapshot, "every entry and the counter");
    let identity = store.identity().expect("identity");
    assert_eq!(
        identity.lineage_id,
        rig.store.identity().expect("identity").lineage_id,
        "the lineage goes on"
    );
    assert_eq!(identity.node_id.as_deref(), Some(rig.node_id.as_str()));
    store.close();
    let seed = Seed::load(&data).expect("load").expect("seed written");
    assert_eq!(seed.to_seed_bytes(), rig.seed.to_seed_bytes());
    for file in [crate::seed::SEED_FILE, STORE_FILE, restore::RESTORED_CONFIG_FILE] {
        let mode = std::fs::metadata(data.join(file)).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    assert!(!data.join(STAGING_DIR).exists());
    let config = std::fs::read_to_string(&report.config_copy).expect("config copy");
    assert!(config.contains("network = \"regtest\"") && !config.contains("hunter2"), "{config}");

    // The same backup again: the data dir is at the backup's commit, not older.
    let err = restore_backup(&data, Network::Regtest, &contents, &rig.seed).expect_err("not older");
    assert!(matches!(err, BackupError::NotOlder { .. }), "{err}");
    // A newer data dir: one more commit.
    let store = Store::open_existing(&data.join(STORE_FILE)).expect("open");
    KVStoreSync::write(&store, "", "", "later", b"x".to_vec()).expect("write");
    store.close();
    let err = restore_backup(&data, Network::Regtest, &contents, &rig.seed).expect_err("newer");
    match err {
        BackupError::NotOlder { backup, data_dir } => assert_eq!(data_dir, backup + 1),
        other => panic!("{other}"),
    }
}

#[test]
fn restore_over_an_older_state_of_the_lineage_keeps_it_aside() {
    let rig = Rig::new(3);
    let (older, _) = rig.backup_bytes();
    KVStoreSync::write(&rig.store, "", "", "later", b"1".to_vec()).expect("write");
    let (newer, _) = rig.backup_bytes();
    let data = rig.dir.path().join("older");
    let older = rig.open(older, &rig.seed).expect("open");
    restore_backup(&data, Network::Regtest, &older, &rig.seed).expect("restore the older");
    let newer = rig.open(newer, &rig.seed).expect("open");
    let report = restore_backup(&data, Network::Regtest, &newer, &rig.seed).expect("restore the newer");
    let aside = report.kept_older_store.expect("kept");
    assert!(aside.exists());
    match data_dir_store(&data).expect("store") {
        DataDirStore::Sound { commit_counter, .. } => assert_eq!(commit_counter, newer.header.commit_counter),
        other => panic!("{other:?}"),
    }
}

#[test]
fn counters_of_another_lineage_are_never_compared() {
    let rig = Rig::new(3);
    let (bytes, _) = rig.backup_bytes();
    let contents = rig.open(bytes, &rig.seed).expect("open");
    // The same node started on an empty store again (a new lineage), with many commits since.
    let data = rig.dir.path().join("restarted");
    let dir = crate::datadir::DataDir::new(&data, Network::Regtest);
    let store = dir.create_node(&rig.seed).expect("node");
    for i in 0..50u8 {
        KVStoreSync::write(&store, "", "", "k", vec![i]).expect("write");
    }
    store.close();
    let err = restore_backup(&data, Network::Regtest, &contents, &rig.seed).expect_err("other lineage");
    assert!(matches!(err, BackupError::OtherLineage { .. }), "{err}");
    // Nor the other way round: an older backup's counter may well be higher.
    assert!(err.to_string().contains("cannot be compared"), "{err}");
}

#[test]
fn a_damaged_store_is_set_aside_by_the_restore() {
    let rig = Rig::new(3);
    let (bytes, _) = rig.backup_bytes();
    let contents = rig.open(bytes, &rig.seed).expect("open");
    let data = rig.dir.path().join("damaged");
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join(STORE_FILE), vec![0xffu8; 8192]).expect("garbage store");
    let report = restore_backup(&data, Network::Regtest, &contents, &rig.seed).expect("restore");
    let aside = report.kept_older_store.expect("the damaged store is kept");
    assert_eq!(std::fs::read(aside).expect("read"), vec![0xffu8; 8192]);
}

#[test]
fn restore_refuses_another_seed_another_network_and_a_running_store() {
    let rig = Rig::new(3);
    let (bytes, _) = rig.backup_bytes();
    let contents = rig.open(bytes, &rig.seed).expect("open");

    let data = rig.dir.path().join("other-seed");
    Seed::from_words(ZOO).expect("seed").store(&data).expect("store");
    let err = restore_backup(&data, Network::Regtest, &contents, &rig.seed).expect_err("other seed");
    assert!(matches!(err, BackupError::Seed(crate::seed::SeedError::Exists(_))), "{err}");
    assert!(!data.join(STORE_FILE).exists(), "nothing written");

    let data = rig.dir.path().join("mainnet");
    let err = restore_backup(&data, Network::Bitcoin, &contents, &rig.seed).expect_err("network");
    assert!(matches!(err, BackupError::NetworkMismatch { .. }), "{err}");
    let other = Seed::from_words(ZOO).expect("seed");
    let err = restore_backup(&data, Network::Regtest, &contents, &other).expect_err("seed");
    assert!(matches!(err, BackupError::NodeMismatch { .. }), "{err}");
    assert!(!data.exists(), "nothing written");

    // The rig's own store is open: its data dir is "in use".
    let err = data_dir_store(rig.dir.path()).expect_err("in use");
    assert!(matches!(err, BackupError::StoreInUse { .. }), "{err}");
}

/// A restore cut short after each of its steps (as a power cut or SIGKILL would) leaves either
/// the state before it or the restored one, once the next start has settled it.
#[test]
fn a_restore_interrupted_at_any_step_is_settled_to_before_or_after() {
    use restore::Step;
    let steps = [
        Step::Staged,
        Step::SeedStaged,
        Step::StoreStaged,
        Step::ConfigStaged,
        Step::Committed,
        Step::OldStoreAside,
        Step::StoreInPlace,
        Step::SeedInPlace,
    ];
    let rig = Rig::new(5);
    let (older, _) = rig.backup_bytes();
    KVStoreSync::write(&rig.store, "", "", "later", b"1".to_vec()).expect("write");
    let (newer, _) = rig.backup_bytes();
    let (older, newer) =
        (rig.open(older, &rig.seed).expect("open"), rig.open(newer, &rig.seed).expect("open"));
    for (empty_before, label) in [(true, "onto an empty data dir"), (false, "over an older state")] {
        for (i, stop_at) in steps.iter().enumerate() {
            let data = rig.dir.path().join(format!("cut-{label}-{i}"));
            if !empty_before {
                restore_backup(&data, Network::Regtest, &older, &rig.seed).expect("older state");
            }
            let before = data_dir_store(&data).expect("before");
            let done =
                restore::restore_backup_until(&data, Network::Regtest, &newer, &rig.seed, &mut |step| {
                    step != *stop_at
                })
                .expect("no error, just cut short");
            assert!(done.is_none(), "{label}: stopped at {stop_at:?}");
            let settled = recover_restore(&data).expect("settle").expect("something to settle");
            let after = data_dir_store(&data).expect("after");
            let committed = i >= 4;
            assert_eq!(settled == RecoveredRestore::Finished, committed, "{label}, {stop_at:?}: {settled:?}");
            if committed {
                match &after {
                    DataDirStore::Sound { commit_counter, .. } => {
                        assert_eq!(*commit_counter, newer.header.commit_counter, "{label}, {stop_at:?}")
                    }
                    other => panic!("{label}, {stop_at:?}: {other:?}"),
                }
                let seed = Seed::load(&data).expect("seed").expect("the seed is in place");
                assert_eq!(seed.to_seed_bytes(), rig.seed.to_seed_bytes());
            } else {
                assert_eq!(after, before, "{label}, {stop_at:?}: the state before");
                assert_eq!(Seed::load(&data).expect("seed").is_some(), !empty_before, "{label}, {stop_at:?}");
            }
            assert!(!data.join(STAGING_DIR).exists(), "{label}, {stop_at:?}");
            assert_eq!(recover_restore(&data).expect("again"), None, "settled once");
        }
    }
}

#[test]
fn backup_files_read_from_a_stick_are_bounded_and_validated() {
    let rig = Rig::new(3);
    let (bytes, _) = rig.backup_bytes();
    let (header, prefix_len) = read_header(&bytes).expect("header");
    let (again, len) = read_header_prefix(&bytes[..prefix_len], bytes.len() as u64).expect("prefix only");
    assert_eq!((again, len), (header.clone(), prefix_len));

    // A header whose node id is not ASCII hex (it was cut for the OLED by bytes once).
    let mut forged = header.clone();
    forged.node_id = "é".repeat(33);
    let json = serde_json::to_vec(&forged).expect("json");
    let mut file = Vec::new();
    file.extend_from_slice(&bytes[..10]);
    file.extend_from_slice(&(json.len() as u32).to_be_bytes());
    file.extend_from_slice(&json);
    let err = read_header_prefix(&file, u64::MAX).expect_err("not a node id");
    assert!(matches!(err, BackupError::BadHeader(_)), "{err}");
    assert_eq!(forged.node_id8().chars().count(), 8, "cutting for the OLED never splits a character");

    // Sizes that overflow or exceed the bound.
    for plain_bytes in [u64::MAX, MAX_BACKUP_BYTES + 1] {
        let mut huge = header.clone();
        huge.plain_bytes = plain_bytes;
        assert_eq!(huge.body_bytes().filter(|b| *b <= MAX_BACKUP_BYTES), None);
        let json = serde_json::to_vec(&huge).expect("json");
        let mut file = bytes[..10].to_vec();
        file.extend_from_slice(&(json.len() as u32).to_be_bytes());
        file.extend_from_slice(&json);
        assert!(matches!(read_header_prefix(&file, u64::MAX), Err(BackupError::BadHeader(_))));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary bytes, and a real header with arbitrary changes, give an error, never a panic.
    #[test]
    fn reading_any_header_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        len in any::<u64>(),
        magic in any::<bool>(),
    ) {
        let mut data = bytes;
        if magic && data.len() >= 14 {
            data[..8].copy_from_slice(file::MAGIC);
            data[8..10].copy_from_slice(&2u16.to_be_bytes());
        }
        let _ = read_header_prefix(&data, len);
        let _ = read_header(&data);
    }

    #[test]
    fn any_json_header_is_validated_without_panicking(
        node_id in ".{0,80}",
        lineage in proptest::option::of(".{0,40}"),
        version in ".{0,40}",
        chunk_size in any::<u32>(),
        plain_bytes in any::<u64>(),
        salt in ".{0,70}",
    ) {
        let header = serde_json::json!({
            "network": "regtest", "node_id": node_id, "lineage_id": lineage, "commit_counter": 1,
            "created_at": 1, "boltbox_version": version, "cipher": "chacha20poly1305",
            "kdf": "hkdf-sha256", "salt": salt, "key_check": "00", "chunk_size": chunk_size,
            "plain_bytes": plain_bytes,
        });
        let json = serde_json::to_vec(&header).expect("json");
        let mut data = file::MAGIC.to_vec();
        data.extend_from_slice(&2u16.to_be_bytes());
        data.extend_from_slice(&(json.len() as u32).to_be_bytes());
        data.extend_from_slice(&json);
        let _ = read_header_prefix(&data, data.len() as u64);
    }
}

#[test]
fn the_seed_gives_a_stable_node_id_per_network() {
    let seed = Seed::from_words(ABANDON).expect("seed");
    let id = seed.node_id(Network::Regtest).expect("id");
    assert_eq!(id.len(), 66);
    assert_eq!(seed.node_id(Network::Bitcoin).expect("id"), id, "the node key ignores the network");
    assert_ne!(Seed::from_words(ZOO).expect("seed").node_id(Network::Regtest).expect("id"), id);
}
