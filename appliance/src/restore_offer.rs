//! Backups on a USB stick that the OLED offers to restore: on a first start with an empty data
//! dir (any node's backup: its seed words come with it), and when the data dir's store is
//! missing, empty or damaged (a backup of the seed's own node: the seed on the device opens it).
//!
//! Two buttons cannot type 24 words, so for a first start the owner writes them into
//! `boltbox-backups/restore.words` on the stick (next to the backups), as they would edit
//! `boltbox.toml`; after a restore that file is deleted from the stick: the seed then lives only
//! in the data dir (0600).
//!
//! A stick that holds this node's live mirror (docs/MIRROR.md) offers the mirror instead of a
//! backup: it is the node's newest state. Its facts come from the plain parts (the snapshot's
//! header, the log's modification time); the restore reads and checks the whole chain, and
//! refuses a mirror that fell behind.
//!
//! Everything on a stick is untrusted: only regular files are read (never through a symlink,
//! never a FIFO or a device), each within a bound; only the first [`MAX_LISTED`] names of the
//! backup directory are looked at; a backup's header is read from its first bytes and checked
//! before anything of it is shown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use boltbox_node::backup::{self, BackupHeader, RestoreReport, Workers};
use boltbox_node::files::read_untrusted;
use boltbox_node::{Network, Seed};

use crate::backup::{STICK_DIR, Stick, find_stick};
use crate::config::AppConfig;
use crate::screens::{BackupFacts, StateSource};

/// The seed words' file on the stick, in [`STICK_DIR`].
pub const WORDS_FILE: &str = "restore.words";
/// At most this many directory entries of a stick's backup directory are looked at.
pub const MAX_LISTED: usize = 1000;
/// The longest words file read: 24 words and some whitespace.
const MAX_WORDS_BYTES: u64 = 4096;

/// A backup on a stick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickBackup {
    /// The stick's name (for the log).
    pub stick: String,
    /// The backup file (for a mirror: its newest snapshot).
    pub file: PathBuf,
    /// Its plain header, checked.
    pub header: BackupHeader,
    /// The live mirror on offer instead of a backup: the directory holding it (the stick),
    /// and when its log was last written (Unix seconds).
    pub mirror: Option<(PathBuf, u64)>,
    /// Where the seed words are expected for a first start.
    pub words: PathBuf,
}

impl StickBackup {
    /// What the OLED shows of it.
    pub fn facts(&self) -> BackupFacts {
        let written = self.mirror.as_ref().map_or(self.header.created_at, |(_, at)| *at);
        BackupFacts {
            node_id8: self.header.node_id8(),
            age: Duration::from_secs(boltbox_node::unix_now().saturating_sub(written)),
            commit: self.header.commit_counter,
            source: if self.mirror.is_some() { StateSource::Mirror } else { StateSource::Backup },
        }
    }

    /// Whether the words file is on the stick (a regular file).
    pub fn words_present(&self) -> bool {
        words_present(&self.words)
    }
}

/// The node's remote mirror on VSS, on offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VssOffer {
    /// The node id (hex).
    pub node_id: String,
    /// The last commit on VSS.
    pub counter: u64,
    /// When it was written (Unix seconds).
    pub written: u64,
    /// The words file the seed came from, for a first start.
    pub words: Option<PathBuf>,
}

/// A state of the node on offer: on a stick (a backup or the live mirror), or on VSS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offered {
    /// On a USB stick.
    Stick(Box<StickBackup>),
    /// On the remote mirror (`[mirror.vss]`).
    Vss(VssOffer),
}

impl Offered {
    /// What the OLED shows of it.
    pub fn facts(&self) -> BackupFacts {
        match self {
            Offered::Stick(stick) => stick.facts(),
            Offered::Vss(vss) => BackupFacts {
                node_id8: vss.node_id.chars().take(8).collect(),
                age: Duration::from_secs(boltbox_node::unix_now().saturating_sub(vss.written)),
                commit: vss.counter,
                source: StateSource::Vss,
            },
        }
    }

    /// Whether the seed words for a first start are there.
    pub fn words_present(&self) -> bool {
        match self {
            Offered::Stick(stick) => stick.words_present(),
            Offered::Vss(vss) => vss.words.as_deref().is_some_and(words_present),
        }
    }

    fn written(&self) -> u64 {
        match self {
            Offered::Stick(stick) => stick.mirror.as_ref().map_or(stick.header.created_at, |(_, at)| *at),
            Offered::Vss(vss) => vss.written,
        }
    }
}

/// The newest state of the node on offer: a stick's ([`find_backup`]), or the remote mirror's
/// when `[mirror.vss]` is set, it holds a restorable state of the node, and it was written
/// after the stick's. The node is the one `seed` gives (the data dir's), else, for a first
/// start, the one the words on the stick give (VSS is only asked with a seed: its keys come
/// from it); without either, a stick's offer alone. Asks the VSS server (up to its request
/// timeout) when it is set.
pub fn find_offer(config: &AppConfig, seed: Option<&Seed>, workers: &Workers) -> Option<Offered> {
    let network = config.node.network;
    let node_id = seed.and_then(|s| s.node_id(network).ok());
    let stick = find_backup(config, node_id.as_deref()).map(|s| Offered::Stick(Box::new(s)));
    let Some(settings) = &config.mirror.vss else { return stick };
    let words = words_file(config);
    let seed = match seed {
        Some(seed) => seed.clone(),
        None => match words.as_deref().map(seed_from_words) {
            Some(Ok(seed)) => seed,
            _ => return stick,
        },
    };
    let setup = match settings.setup(&seed, &config.node, workers.clone()) {
        Ok(setup) => setup,
        Err(e) => {
            tracing::warn!("the remote mirror is not looked at: {e}");
            return stick;
        }
    };
    let vss = match boltbox_node::mirror::vss::vss_head(&setup) {
        Ok(Some((counter, written, true))) => Offered::Vss(VssOffer {
            node_id: setup.node_id.clone(),
            counter,
            written,
            words: if node_id.is_none() { words } else { None },
        }),
        Ok(_) => return stick,
        Err(e) => {
            tracing::warn!("the remote mirror cannot be looked at: {e}");
            return stick;
        }
    };
    match stick {
        Some(stick) if stick.written() > vss.written() => Some(stick),
        _ => Some(vss),
    }
}

/// Whether the words file at `path` is there (a regular file, never through a symlink).
fn words_present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

/// Where a first start looks for the seed words: `stick` (the first inserted one: its name and
/// path), else `[mirror] dir`.
fn words_home(stick: Option<&Stick>, config: &AppConfig) -> Option<(String, PathBuf)> {
    match stick {
        Some(stick) => Some((stick.name.clone(), stick.path.clone())),
        None => config.mirror.dir().map(|dir| (dir.display().to_string(), dir.to_path_buf())),
    }
}

/// The seed words' file a first start reads (see [`words_home`]).
fn words_file(config: &AppConfig) -> Option<PathBuf> {
    let stick = find_stick(&config.backup.sticks, config.eject_request().is_some()).ok();
    words_home(stick.as_ref(), config).map(|(_, home)| home.join(STICK_DIR).join(WORDS_FILE))
}

/// The newest state of a node on `config`'s network that a stick offers: of `node_id` when
/// given, else of the node the stick's seed words give (when they are there and valid), else of
/// any node. That is its live mirror (in `[mirror] dir`, else the newest on any inserted stick,
/// a read-only one too) unless
/// a backup there is plainly newer (made after the mirror was last written, and further on in
/// the same lineage); else its newest backup (by commit counter: [`backup::sort_by_state`]).
pub fn find_backup(config: &AppConfig, node_id: Option<&str>) -> Option<StickBackup> {
    let network = config.node.network;
    let stick = find_stick(&config.backup.sticks, config.eject_request().is_some()).ok();
    let (name, home) = words_home(stick.as_ref(), config)?;
    let words = home.join(STICK_DIR).join(WORDS_FILE);
    let words_node = match node_id {
        Some(_) => None,
        None => seed_from_words(&words).ok().and_then(|seed| seed.node_id(network).ok()),
    };
    let node_id = node_id.or(words_node.as_deref());
    // The mirror may be on another stick than the backups (a backup stick and the mirror
    // stick both inserted): every one is looked at, and the furthest state taken.
    let mirror = config
        .mirror
        .dir()
        .map(Path::to_path_buf)
        .into_iter()
        .chain(
            crate::backup::inserted_sticks(&config.backup.sticks, config.eject_request().is_some())
                .into_iter()
                .map(|s| s.path),
        )
        .filter_map(|dir| {
            boltbox_node::mirror::newest_snapshot(&dir, network, node_id).map(|found| (dir, found))
        })
        .max_by_key(|(_, (_, header, written))| (header.commit_counter, *written));
    let backup = stick.as_ref().and_then(|s| newest_backup(&s.path.join(STICK_DIR), network, node_id));
    match (mirror, backup) {
        (Some((_, (_, mirror, written))), Some((file, header)))
            if header.created_at > written
                && (header.lineage_id != mirror.lineage_id
                    || header.commit_counter > mirror.commit_counter) =>
        {
            Some(StickBackup { stick: name, file, header, mirror: None, words })
        }
        (Some((dir, (file, header, written))), _) => {
            Some(StickBackup { stick: name, file, header, mirror: Some((dir, written)), words })
        }
        (None, Some((file, header))) => Some(StickBackup { stick: name, file, header, mirror: None, words }),
        (None, None) => None,
    }
}

/// The seed in a stick's words file.
fn seed_from_words(path: &Path) -> Result<Seed, RestoreError> {
    let words = read_untrusted(path, MAX_WORDS_BYTES).map_err(|_| RestoreError::NoWords)?;
    let words = String::from_utf8(words).map_err(|_| RestoreError::BadWords)?;
    Seed::from_words(&words).map_err(|_| RestoreError::BadWords)
}

fn newest_backup(dir: &Path, network: Network, node_id: Option<&str>) -> Option<(PathBuf, BackupHeader)> {
    let mut found: Vec<(PathBuf, BackupHeader)> = std::fs::read_dir(dir)
        .ok()?
        .take(MAX_LISTED)
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == backup::dir::EXTENSION))
        .filter_map(|p| {
            let header = backup::read_header_of(&p).ok()?;
            let ours = header.network == network && node_id.is_none_or(|id| id == header.node_id);
            ours.then_some((p, header))
        })
        .collect();
    match node_id {
        Some(_) => backup::sort_by_state(&mut found),
        // Several nodes' backups and no words to tell which: commit counters of different
        // nodes do not compare; the most recently made is shown (the words decide the restore).
        None => found.sort_by_key(|(_, h)| h.created_at),
    }
    found.pop()
}

/// Restores the backup on offer onto the data dir: a backup of the seed's node when the data dir
/// has a seed, else the newest backup with the seed words from the stick (then deleted there).
/// Decrypts and checks the whole backup first; the restore itself is atomic.
///
/// `shown` is where the state the owner confirmed is (what the OLED showed): if the offer is
/// now elsewhere (VSS stopped answering, a stick was swapped), nothing is restored.
pub fn restore(
    config: &AppConfig,
    workers: &Workers,
    shown: Option<StateSource>,
) -> Result<RestoreReport, RestoreError> {
    let data_dir = &config.node.data_dir;
    let network = config.node.network;
    let own_seed = Seed::load(data_dir).map_err(|e| RestoreError::Read(e.to_string()))?;
    let offer = find_offer(config, own_seed.as_ref(), workers).ok_or(RestoreError::NoBackup)?;
    if shown.is_some_and(|shown| shown != offer.facts().source) {
        return Err(RestoreError::Changed);
    }
    let words = match &offer {
        Offered::Stick(stick) => Some(stick.words.clone()),
        Offered::Vss(vss) => vss.words.clone(),
    };
    let (seed, from_stick) = match own_seed {
        Some(seed) => (seed, false),
        None => (seed_from_words(words.as_deref().ok_or(RestoreError::NoWords)?)?, true),
    };
    let mut takeover = None;
    let contents = match &offer {
        Offered::Stick(offer) => match &offer.mirror {
            Some((stick, _)) => {
                boltbox_node::mirror::read_mirror(stick, &seed, network, workers)
                    .map_err(|e| RestoreError::Read(e.to_string()))?
                    .contents
            }
            None => {
                let file = read_untrusted(&offer.file, backup::MAX_BACKUP_BYTES)
                    .map_err(|e| RestoreError::Read(e.to_string()))?;
                backup::open_backup(Arc::new(file), &seed, workers, &mut |_| {})?
            }
        },
        Offered::Vss(_) => {
            let settings = config.mirror.vss.as_ref().ok_or(RestoreError::NoBackup)?;
            let setup = settings.setup(&seed, &config.node, workers.clone()).map_err(RestoreError::Read)?;
            let read = boltbox_node::mirror::vss::read_vss(&setup, network, workers)
                .map_err(|e| RestoreError::Read(e.to_string()))?;
            takeover = Some(read.takeover);
            read.mirror.contents
        }
    };
    let report = backup::restore_backup(data_dir, network, &contents, &seed)?;
    // Restored from VSS: this card may take over writing the node's state there.
    if let Some(takeover) = &takeover {
        boltbox_node::mirror::vss::record_takeover(data_dir, takeover)
            .map_err(|e| RestoreError::Read(e.to_string()))?;
    }
    if let Offered::Stick(offer) = &offer
        && let Some((stick, _)) = &offer.mirror
    {
        crate::mirror::adopt(data_dir, stick);
    }
    if let (true, Some(words)) = (from_stick, &words) {
        // The owner has the words: they just wrote them onto the stick.
        let seen = crate::display_loop::SeedReminder::Seen { at: boltbox_node::unix_now() };
        if let Err(e) = seen.save(data_dir) {
            tracing::warn!("cannot record that the seed words are known: {e}");
        }
        // The seed is in the data dir now; on the stick it would sit next to the backup it opens.
        if let Err(e) = std::fs::remove_file(words) {
            tracing::warn!(error = %e, "restored, but cannot delete {}: delete it by hand", words.display());
        } else if let Some(dir) = words.parent() {
            // Best effort: the deletion reaches the stick before the owner pulls it.
            let _ = boltbox_node::files::sync_dir(dir);
        }
    }
    Ok(report)
}

/// Why the restore did not happen, in words for the OLED (at most three lines of 21).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The backup is gone from the stick (pulled, deleted).
    #[error("no backup of this node on a USB stick")]
    NoBackup,
    /// The words file is missing or unreadable.
    #[error("put the 24 seed words in {STICK_DIR}/{WORDS_FILE}")]
    NoWords,
    /// The file does not hold 24 valid BIP39 words.
    #[error("restore.words: not 24 valid seed words")]
    BadWords,
    /// The backup or the seed cannot be read.
    #[error("cannot read: {0}")]
    Read(String),
    /// What is on offer is no longer what was shown.
    #[error("the state on offer changed: look again")]
    Changed,
    /// The backup refused: wrong seed, altered, not older...
    #[error("{0}")]
    Backup(#[from] boltbox_node::backup::BackupError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(data: &Path, sticks: &Path) -> AppConfig {
        AppConfig::parse(&format!(
            "[node]\nnetwork = \"regtest\"\ndata_dir = \"{}\"\n[node.chain]\nsource = \"bitcoind\"\n\
             rpc_user = \"u\"\nrpc_password = \"p\"\n[board]\nboard = \"sim\"\n[backup]\nsticks = \"{}\"\n",
            data.display(),
            sticks.display()
        ))
        .expect("config")
    }

    #[test]
    fn files_that_are_not_backups_are_ignored_and_nothing_on_a_stick_is_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sticks = dir.path().join("usb");
        let config = config(&dir.path().join("data"), &sticks);
        assert_eq!(find_backup(&config, None), None, "no stick");
        let backups = sticks.join("sda1").join(STICK_DIR);
        std::fs::create_dir_all(&backups).expect("mkdir");
        assert_eq!(find_backup(&config, None), None, "a stick without backups");
        std::fs::write(backups.join("junk.bbk"), b"not a backup").expect("junk");
        std::os::unix::fs::symlink("/dev/zero", backups.join("zero.bbk")).expect("symlink");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            backups.join("fifo.bbk"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        // A directory named like a backup, and a header-sized file of garbage.
        std::fs::create_dir(backups.join("dir.bbk")).expect("mkdir");
        let mut garbage = b"BOLTBKUP\x00\x02\xff\xff\xff\xff".to_vec();
        garbage.resize(100_000, 0xff);
        std::fs::write(backups.join("huge-header.bbk"), garbage).expect("garbage");
        assert_eq!(find_backup(&config, None), None, "none of these is a backup; none hangs or panics");
    }

    /// A store of `seed`'s node.
    fn store_of(seed: &Seed, config: &AppConfig, dir: &Path) -> boltbox_node::store::Store {
        let node_id = seed.node_id(config.node.network).expect("node id");
        boltbox_node::store::Store::create_new(&dir.join(format!("{node_id}.redb")), Some(&node_id))
            .expect("store")
    }

    /// A backup of `store` (of `seed`'s node) after `commits` more commits, dated `created_at`,
    /// in `dir`.
    fn backup_of(
        store: &boltbox_node::store::Store,
        seed: &Seed,
        config: &AppConfig,
        dir: &Path,
        commits: u8,
        created_at: u64,
    ) -> BackupHeader {
        use ldk_node::lightning::util::persist::KVStoreSync;
        for n in 0..commits {
            KVStoreSync::write(store, "", "", "tick", vec![n]).expect("write");
        }
        let node_id = seed.node_id(config.node.network).expect("node id");
        let (snapshot, identity) = (store.snapshot().expect("snapshot"), store.identity().expect("identity"));
        let input = backup::BackupInput {
            seed,
            config: &config.node,
            node_id: &node_id,
            lineage_id: &identity.lineage_id,
            snapshot: &snapshot,
            created_at,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().expect("runtime");
        let mut bytes = Vec::new();
        let (header, _) =
            backup::write_backup(&input, &mut bytes, &Workers(runtime.handle().clone()), &mut |_| {})
                .expect("backup");
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join(backup::file_name(&header)), bytes).expect("write");
        header
    }

    #[test]
    fn a_first_start_with_the_words_on_a_stick_offers_and_restores_the_nodes_state_on_vss() {
        use boltbox_node::mirror::vss::{VssAuth, VssSetup, VssStatus};
        use ldk_node::lightning::util::persist::KVStoreSync;
        let vss = boltbox_tests::Vss::start().expect("vss");
        let dir = tempfile::tempdir().expect("tempdir");
        let sticks = dir.path().join("usb");
        let data = dir.path().join("data");
        let mut config = config(&data, &sticks);
        config.mirror.vss =
            Some(crate::config::VssSettings { url: vss.url(), token_file: None, certificate: None });
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().expect("runtime");
        let workers = Workers(runtime.handle().clone());
        // The node of a box that is gone, mirrored to VSS.
        let seed = Seed::generate();
        let store = store_of(&seed, &config, dir.path());
        // (The box that is gone had its own data dir, and its own device record there.)
        let old_box = boltbox_node::NodeConfig { data_dir: dir.path().join("old"), ..config.node.clone() };
        std::fs::create_dir_all(&old_box.data_dir).expect("old data dir");
        store.mirror_to_vss(VssSetup {
            url: vss.url(),
            auth: VssAuth::Signature,
            certificate: None,
            seed: seed.clone(),
            config: old_box,
            node_id: seed.node_id(config.node.network).expect("node id"),
            workers: workers.clone(),
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            KVStoreSync::write(&store, "monitors", "", "m", vec![7; 64]).expect("write");
            if matches!(store.vss_status(), VssStatus::InSync { .. }) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "in sync: {:?}", store.vss_status());
        }
        KVStoreSync::write(&store, "monitors", "", "last", vec![8; 64]).expect("write");
        let counter = store.commit_counter().expect("counter");

        // A fresh card: without the words VSS cannot even be asked (its keys are the seed's).
        std::fs::create_dir_all(sticks.join("sda1").join(STICK_DIR)).expect("stick");
        assert_eq!(find_offer(&config, None, &workers), None, "no words, no backup: nothing on offer");
        let words = sticks.join("sda1").join(STICK_DIR).join(WORDS_FILE);
        std::fs::write(&words, seed.words().join(" ")).expect("words");
        let offer = find_offer(&config, None, &workers).expect("VSS's state on offer");
        let facts = offer.facts();
        assert_eq!((facts.source, facts.commit), (StateSource::Vss, counter), "{offer:?}");
        assert!(offer.words_present());

        assert!(
            matches!(restore(&config, &workers, Some(StateSource::Backup)), Err(RestoreError::Changed)),
            "not what the owner was shown: nothing restored"
        );
        let report = restore(&config, &workers, Some(StateSource::Vss)).expect("restore from VSS");
        assert_eq!(report.commit_counter, counter, "the last commit VSS acknowledged");
        assert!(!words.exists(), "the words are not left on the stick");
        let restored = boltbox_node::store::Store::open(&report.store).expect("the restored store");
        assert_eq!(KVStoreSync::read(&restored, "monitors", "", "last").expect("read"), vec![8; 64]);
    }

    #[test]
    fn a_stick_with_the_nodes_mirror_offers_it_and_restores_its_newest_state() {
        use boltbox_node::mirror::{MirrorSetup, MirrorStatus};
        use ldk_node::lightning::util::persist::KVStoreSync;
        let dir = tempfile::tempdir().expect("tempdir");
        let sticks = dir.path().join("usb");
        let data = dir.path().join("data");
        let config = config(&data, &sticks);
        let stick = sticks.join("sda1");
        let seed = Seed::generate();
        let store = store_of(&seed, &config, dir.path());
        // A backup, then the mirror going on past it.
        let backed_up =
            backup_of(&store, &seed, &config, &stick.join(STICK_DIR), 2, boltbox_node::unix_now());
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().expect("runtime");
        let workers = Workers(runtime.handle().clone());
        // The mirror on another stick than the backups (both inserted), later by name.
        store.mirror_to(MirrorSetup {
            dir: sticks.join("sdb1"),
            seed: seed.clone(),
            config: config.node.clone(),
            node_id: seed.node_id(config.node.network).expect("node id"),
            workers: workers.clone(),
        });
        for n in 0..5u8 {
            KVStoreSync::write(&store, "", "", "after", vec![n]).expect("write");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !matches!(store.mirror_status(), MirrorStatus::InSync { .. }) {
            assert!(std::time::Instant::now() < deadline, "the mirror in sync: {:?}", store.mirror_status());
            KVStoreSync::write(&store, "", "", "after", vec![9]).expect("write");
        }
        let counter = store.commit_counter().expect("counter");

        // The node's own seed on the device (its store lost): the mirror is offered.
        seed.store(&data).expect("seed");
        let offer = find_backup(&config, Some(&backed_up.node_id)).expect("an offer");
        assert!(
            offer.mirror.is_some() && offer.facts().source == StateSource::Mirror,
            "the mirror, not the backup: {offer:?}"
        );

        // A mirror given up (no longer written) and a backup made later, further on: the backup.
        store.stop_mirror();
        let later =
            backup_of(&store, &seed, &config, &stick.join(STICK_DIR), 3, boltbox_node::unix_now() + 3600);
        let offer = find_backup(&config, Some(&later.node_id)).expect("an offer");
        assert_eq!(
            (offer.mirror.is_none(), offer.header.commit_counter),
            (true, later.commit_counter),
            "{offer:?}"
        );
        std::fs::remove_file(&offer.file).expect("take the later backup away again");

        let report = restore(&config, &workers, Some(StateSource::Mirror)).expect("restore");
        assert_eq!(
            report.commit_counter, counter,
            "the mirror's last commit, past the backup's {}",
            backed_up.commit_counter
        );
        assert!(report.commit_counter > backed_up.commit_counter);
    }

    #[test]
    fn the_offer_is_the_newest_state_of_the_node_whose_words_are_on_the_stick() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sticks = dir.path().join("usb");
        let config = config(&dir.path().join("data"), &sticks);
        let backups = sticks.join("sda1").join(STICK_DIR);
        let (ours, other) = (Seed::generate(), Seed::generate());
        let (our_store, other_store) =
            (store_of(&ours, &config, dir.path()), store_of(&other, &config, dir.path()));
        let now = boltbox_node::unix_now();
        backup_of(&our_store, &ours, &config, &backups, 2, now - 3600);
        // The newest state, made after a reboot before time sync: dated years back.
        let newest = backup_of(&our_store, &ours, &config, &backups, 3, 1_600_000_000);
        // Another node's backup, made last of all.
        let others = backup_of(&other_store, &other, &config, &backups, 9, now);

        // Without words nothing tells which node: the most recently made is shown.
        assert_eq!(find_backup(&config, None).map(|b| b.header), Some(others.clone()));
        std::fs::write(backups.join(WORDS_FILE), ours.words().join(" ")).expect("words");
        assert_eq!(find_backup(&config, None).map(|b| b.header), Some(newest.clone()), "the words' node");
        assert_eq!(find_backup(&config, Some(&newest.node_id)).map(|b| b.header), Some(newest));
        assert_eq!(find_backup(&config, Some(&others.node_id)).map(|b| b.header), Some(others));
    }
}
