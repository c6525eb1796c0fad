//! The ledger's pure logic: its keys and records, its operations, and each operation as an
//! engine transaction ([`LedgerTx`]) that declares the keys it reads and writes.
//!
//! No I/O here: [`super::Accounts`] keeps the records in the engine's state and in the store.
//! The rules every operation keeps (the ledger's invariant, checked by [`check`]):
//!
//! - an account's `held_msat` is the sum of its holds' `amount_msat + fee_limit_msat`, and never
//!   more than its `balance_msat`;
//! - the ledger tracks `Σ balance_msat` of all accounts (holds are part of the balances until a
//!   payment settles); money comes in only from the owner's main account (at most what main
//!   has: the node's spendable Lightning balance minus what the ledger tracks) and from paid
//!   invoices, and leaves only to main and by settled payments.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use boltbox_executor::engine::{Transaction, TxContext};

/// An account's id. Ids are never reused: a closed account stays as a tombstone.
pub type AccountId = u64;

/// The owner's main account: what no other account holds. It is not stored; its balance is
/// derived (the node's spendable balance minus what the ledger tracks).
pub const MAIN: AccountId = 0;

/// The most accounts one invoice may split its amount over.
pub const MAX_SHARES: usize = 16;

/// The longest account name, in bytes.
pub const MAX_NAME_BYTES: usize = 32;

/// A BOLT11 payment hash.
pub type PaymentHash = [u8; 32];

/// A key of the ledger's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Key {
    /// What main can give to accounts in this batch (only in the engine's state, never stored).
    Main,
    /// An account.
    Account(AccountId),
    /// The hold of an outgoing payment, by its payment hash.
    Hold(PaymentHash),
    /// An invoice made for accounts, by its payment hash.
    Invoice(PaymentHash),
}

/// A spending budget: at most `limit_msat` leaves the account per `period_secs` (payments with
/// their fee limit, and transfers out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// The most per period, msat.
    pub limit_msat: u64,
    /// The period's length, seconds (> 0).
    pub period_secs: u64,
    /// Unix seconds when the current period began.
    pub window_start: u64,
    /// Spent in the current period, msat.
    pub spent_msat: u64,
}

impl Budget {
    /// Moves the window to the period `now` falls in (a new period starts with nothing spent).
    fn roll(&mut self, now: u64) {
        let period = self.period_secs.max(1);
        if now >= self.window_start.saturating_add(period) {
            self.window_start = now - (now - self.window_start) % period;
            self.spent_msat = 0;
        }
    }
}

/// An account.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Unique among open accounts.
    pub name: String,
    /// What it holds, msat (its holds included).
    pub balance_msat: u64,
    /// Held for payments in flight, msat.
    pub held_msat: u64,
    /// Its spending budget, if any.
    pub budget: Option<Budget>,
    /// The key its signed transfers are authenticated with (HMAC-SHA256, [`transfer_mac`]).
    pub key: [u8; 32],
    /// The highest nonce of a signed transfer from it (replays are refused).
    pub nonce: u64,
    /// Closed (a tombstone: its id is never given again).
    pub closed: bool,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("balance_msat", &self.balance_msat)
            .field("held_msat", &self.held_msat)
            .field("budget", &self.budget)
            .field("nonce", &self.nonce)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// What it can spend now, msat.
    pub fn available_msat(&self) -> u64 {
        self.balance_msat.saturating_sub(self.held_msat)
    }
}

/// The hold of an outgoing payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The paying account.
    pub account: AccountId,
    /// The amount paid, msat.
    pub amount_msat: u64,
    /// The most routing fee it may cost, msat.
    pub fee_limit_msat: u64,
    /// The budget period it was counted in (0 without a budget).
    pub window_start: u64,
}

impl Hold {
    fn cost(&self) -> u64 {
        self.amount_msat.saturating_add(self.fee_limit_msat)
    }
}

/// Which accounts an invoice pays, by shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceFor {
    /// (account, weight); weights > 0.
    pub shares: Vec<(AccountId, u32)>,
    /// Credited already (a replayed PaymentReceived credits nothing).
    pub credited: bool,
}

/// A value of the ledger's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// What main can give to accounts, msat (see [`Key::Main`]).
    Main(u64),
    /// An account.
    Account(Account),
    /// A payment's hold.
    Hold(Hold),
    /// An invoice made for accounts.
    Invoice(InvoiceFor),
}

/// One operation on the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Opens account `id` (chosen by [`super::Accounts`]).
    Open {
        /// The new id.
        id: AccountId,
        /// Its name.
        name: String,
        /// Its transfer key.
        key: [u8; 32],
    },
    /// Renames an open account.
    Rename {
        /// The account.
        id: AccountId,
        /// The new name.
        name: String,
    },
    /// Closes an empty account.
    Close {
        /// The account.
        id: AccountId,
    },
    /// Moves `amount_msat` between two accounts, [`MAIN`] on either side. Instant and free.
    Transfer {
        /// Paying account.
        from: AccountId,
        /// Receiving account.
        to: AccountId,
        /// Amount, msat (> 0).
        amount_msat: u64,
        /// With `mac`: a nonce above every earlier signed transfer's from this account.
        nonce: u64,
        /// [`transfer_mac`] with the paying account's key; `None` only from the owner (the
        /// control socket), never from an app.
        mac: Option<[u8; 32]>,
    },
    /// Records an invoice made for accounts.
    Invoice {
        /// The invoice's payment hash.
        payment_hash: PaymentHash,
        /// (account, weight): 1 to [`MAX_SHARES`] accounts.
        shares: Vec<(AccountId, u32)>,
    },
    /// Credits a paid invoice to its accounts (once: a second credit is refused).
    Credit {
        /// The invoice's payment hash.
        payment_hash: PaymentHash,
        /// What was received, msat.
        amount_msat: u64,
    },
    /// Holds amount plus fee limit of an account for a payment about to start.
    Hold {
        /// The payment's hash.
        payment_hash: PaymentHash,
        /// The paying account.
        account: AccountId,
        /// Amount, msat.
        amount_msat: u64,
        /// The most fee, msat.
        fee_limit_msat: u64,
    },
    /// The payment succeeded: the account pays amount plus the fee paid (unused fee returns).
    Settle {
        /// The payment's hash.
        payment_hash: PaymentHash,
        /// The fee paid, msat; `None` (unknown) charges the whole fee limit.
        fee_paid_msat: Option<u64>,
    },
    /// The payment failed: the hold returns whole.
    Release {
        /// The payment's hash.
        payment_hash: PaymentHash,
    },
    /// Sets (`Some`) or removes an account's spending budget.
    SetBudget {
        /// The account.
        account: AccountId,
        /// The most per period, msat; `None` removes the budget.
        limit_msat: Option<u64>,
        /// The period, seconds (> 0).
        period_secs: u64,
    },
}

/// Why an operation had no effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// No such account (or it is closed).
    #[error("account {0} does not exist or is closed")]
    NoAccount(AccountId),
    /// The id is taken.
    #[error("account {0} exists already")]
    IdTaken(AccountId),
    /// The name is not valid.
    #[error("invalid account name: {0}")]
    InvalidName(String),
    /// Another open account has the name.
    #[error("an account named {0:?} exists already")]
    NameTaken(String),
    /// The account holds money or has payments in flight.
    #[error("account {id} is not empty ({balance_msat} msat, {held_msat} msat held)")]
    NotEmpty {
        /// The account.
        id: AccountId,
        /// Its balance.
        balance_msat: u64,
        /// Held of it.
        held_msat: u64,
    },
    /// Not enough available in the account.
    #[error("account {id} has {available_msat} msat available, {needed_msat} msat needed")]
    Insufficient {
        /// The account.
        id: AccountId,
        /// Available (balance minus holds).
        available_msat: u64,
        /// Needed.
        needed_msat: u64,
    },
    /// Main cannot give that much: the node's spendable balance is tracked by accounts already.
    #[error("the main account has {available_msat} msat available, {needed_msat} msat needed")]
    MainInsufficient {
        /// What main has.
        available_msat: u64,
        /// Needed.
        needed_msat: u64,
    },
    /// The budget of the period would be exceeded.
    #[error("account {id}'s budget allows {left_msat} msat more this period, {needed_msat} msat needed")]
    Budget {
        /// The account.
        id: AccountId,
        /// Left in the period.
        left_msat: u64,
        /// Needed.
        needed_msat: u64,
    },
    /// Zero, a transfer to itself, too many or no shares, an overflow…
    #[error("invalid: {0}")]
    Invalid(&'static str),
    /// The transfer's authentication failed.
    #[error("the transfer from account {0} is not signed by its key")]
    BadMac(AccountId),
    /// The signed transfer's nonce was used (a replay) or is not above the last.
    #[error("the transfer from account {id} reuses nonce {nonce} (the last was {last})")]
    Replay {
        /// The account.
        id: AccountId,
        /// The nonce given.
        nonce: u64,
        /// The highest nonce used.
        last: u64,
    },
    /// Main's transfers come from the owner, never signed by an app.
    #[error("a transfer from the main account cannot be signed by an app")]
    MainSigned,
    /// No invoice for accounts with this hash.
    #[error("no invoice for accounts has this payment hash")]
    UnknownInvoice,
    /// An invoice for accounts with this hash exists already.
    #[error("an invoice with this payment hash is recorded already")]
    InvoiceExists,
    /// The invoice was credited already (a replayed event).
    #[error("the invoice was credited already")]
    AlreadyCredited,
    /// No hold for this payment.
    #[error("no hold for this payment")]
    UnknownHold,
    /// A hold for this payment exists already.
    #[error("this payment is held already")]
    HoldExists,
    /// The transaction touched a key it did not declare (the ledger changed between
    /// declaration and execution, e.g. an invoice recorded and credited in one batch).
    #[error("undeclared key {0:?}: try again")]
    Undeclared(Key),
}

/// What a successful operation changed in the tracked total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Done {
    /// Money that came into the ledger, msat.
    pub tracked_in_msat: u64,
    /// Money that left the ledger, msat.
    pub tracked_out_msat: u64,
    /// The id an open gave its account.
    pub opened: Option<AccountId>,
}

/// The MAC a signed transfer carries: HMAC-SHA256 with the paying account's key over
/// `"boltbox-transfer-v1" || from || to || amount_msat || nonce` (each u64 big-endian).
pub fn transfer_mac(
    key: &[u8; 32],
    from: AccountId,
    to: AccountId,
    amount_msat: u64,
    nonce: u64,
) -> [u8; 32] {
    transfer_hmac(key, from, to, amount_msat, nonce).finalize().into_bytes().into()
}

fn transfer_hmac(
    key: &[u8; 32],
    from: AccountId,
    to: AccountId,
    amount_msat: u64,
    nonce: u64,
) -> Hmac<Sha256> {
    // HMAC takes keys of any length: a 32-byte key never fails.
    let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(b"boltbox-transfer-v1");
    for n in [from, to, amount_msat, nonce] {
        mac.update(&n.to_be_bytes());
    }
    mac
}

/// Whether `name` may name an account: 1 to [`MAX_NAME_BYTES`] bytes of printable characters,
/// not a number (the CLI takes an id or a name) nor `main`, no leading or trailing space.
pub fn valid_name(name: &str) -> Result<(), LedgerError> {
    let why = if name.is_empty() || name.len() > MAX_NAME_BYTES {
        "1 to 32 bytes"
    } else if name.chars().any(char::is_control) {
        "no control characters"
    } else if name.parse::<u64>().is_ok() {
        "not a number (those are ids)"
    } else if name.eq_ignore_ascii_case("main") {
        "not \"main\" (the owner's main account)"
    } else if name.trim() != name {
        "no leading or trailing space"
    } else {
        return Ok(());
    };
    Err(LedgerError::InvalidName(why.into()))
}

/// One operation as an engine transaction.
#[derive(Debug, Clone)]
pub struct LedgerTx {
    op: Op,
    now: u64,
    reads: Vec<Key>,
    writes: Vec<Key>,
    /// Refused before execution (a name check): runs as this error.
    refused: Option<LedgerError>,
}

impl LedgerTx {
    /// `op` at `now` (Unix seconds). `book` gives the records as they are before the batch: a
    /// credit, settle or release declares the accounts its invoice or hold names.
    pub fn new<'a>(op: Op, now: u64, book: impl Fn(&Key) -> Option<&'a Record>) -> Self {
        let account = |id: AccountId| if id == MAIN { Key::Main } else { Key::Account(id) };
        let (reads, writes) = match &op {
            Op::Open { id, .. } | Op::Rename { id, .. } | Op::Close { id } => {
                (vec![], vec![Key::Account(*id)])
            }
            Op::Transfer { from, to, .. } => (vec![], vec![account(*from), account(*to)]),
            Op::Invoice { payment_hash, shares } => {
                (shares.iter().map(|(id, _)| Key::Account(*id)).collect(), vec![Key::Invoice(*payment_hash)])
            }
            Op::Credit { payment_hash, .. } => {
                let mut writes = vec![Key::Invoice(*payment_hash)];
                if let Some(Record::Invoice(invoice)) = book(&Key::Invoice(*payment_hash)) {
                    writes.extend(invoice.shares.iter().map(|(id, _)| Key::Account(*id)));
                }
                (vec![], writes)
            }
            Op::Hold { payment_hash, account, .. } => {
                (vec![], vec![Key::Hold(*payment_hash), Key::Account(*account)])
            }
            Op::Settle { payment_hash, .. } | Op::Release { payment_hash } => {
                let mut writes = vec![Key::Hold(*payment_hash)];
                if let Some(Record::Hold(hold)) = book(&Key::Hold(*payment_hash)) {
                    writes.push(Key::Account(hold.account));
                }
                (vec![], writes)
            }
            Op::SetBudget { account, .. } => (vec![], vec![Key::Account(*account)]),
        };
        LedgerTx { op, now, reads, writes, refused: None }
    }

    /// `op`, refused before it ran for `error` (declares no keys, has no effect).
    pub fn refused(op: Op, error: LedgerError) -> Self {
        LedgerTx { op, now: 0, reads: vec![], writes: vec![], refused: Some(error) }
    }

    /// The operation.
    pub fn op(&self) -> &Op {
        &self.op
    }
}

type Ctx<'c> = TxContext<'c, Key, Record>;

/// Reads a key the transaction declared; an undeclared one is its error.
fn get(ctx: &Ctx<'_>, key: Key) -> Result<Option<Record>, LedgerError> {
    ctx.get(&key).map(|r| r.cloned()).map_err(|_| LedgerError::Undeclared(key))
}

fn put(ctx: &mut Ctx<'_>, key: Key, record: Record) -> Result<(), LedgerError> {
    ctx.put(key, record).map_err(|_| LedgerError::Undeclared(key))
}

fn open_account(ctx: &Ctx<'_>, id: AccountId) -> Result<Account, LedgerError> {
    match get(ctx, Key::Account(id))? {
        Some(Record::Account(account)) if !account.closed => Ok(account),
        _ => Err(LedgerError::NoAccount(id)),
    }
}

fn main_available(ctx: &Ctx<'_>) -> Result<u64, LedgerError> {
    match get(ctx, Key::Main)? {
        Some(Record::Main(msat)) => Ok(msat),
        _ => Ok(0),
    }
}

/// Takes `cost` out of the account's available money and its budget.
fn spend(id: AccountId, account: &mut Account, cost: u64, now: u64) -> Result<u64, LedgerError> {
    let available_msat = account.available_msat();
    if cost > available_msat {
        return Err(LedgerError::Insufficient { id, available_msat, needed_msat: cost });
    }
    let mut window = 0;
    if let Some(budget) = &mut account.budget {
        budget.roll(now);
        let left_msat = budget.limit_msat.saturating_sub(budget.spent_msat);
        if cost > left_msat {
            return Err(LedgerError::Budget { id, left_msat, needed_msat: cost });
        }
        budget.spent_msat = budget.spent_msat.saturating_add(cost);
        window = budget.window_start;
    }
    Ok(window)
}

/// Gives `msat` counted in the budget window `window` back to the budget (if still current).
fn unspend(account: &mut Account, msat: u64, window: u64) {
    if let Some(budget) = &mut account.budget
        && budget.window_start == window
    {
        budget.spent_msat = budget.spent_msat.saturating_sub(msat);
    }
}

impl Transaction for LedgerTx {
    type Key = Key;
    type Value = Record;
    type Output = Done;
    type Error = LedgerError;

    fn reads(&self) -> &[Key] {
        &self.reads
    }

    fn writes(&self) -> &[Key] {
        &self.writes
    }

    fn execute(&self, ctx: &mut Ctx<'_>) -> Result<Done, LedgerError> {
        if let Some(error) = &self.refused {
            return Err(error.clone());
        }
        let now = self.now;
        let overflow = || LedgerError::Invalid("amount overflow");
        match &self.op {
            Op::Open { id, name, key } => {
                if *id == MAIN {
                    return Err(LedgerError::IdTaken(MAIN));
                }
                valid_name(name)?;
                if get(ctx, Key::Account(*id))?.is_some() {
                    return Err(LedgerError::IdTaken(*id));
                }
                let account = Account {
                    name: name.clone(),
                    balance_msat: 0,
                    held_msat: 0,
                    budget: None,
                    key: *key,
                    nonce: 0,
                    closed: false,
                };
                put(ctx, Key::Account(*id), Record::Account(account))?;
                Ok(Done { opened: Some(*id), ..Done::default() })
            }
            Op::Rename { id, name } => {
                valid_name(name)?;
                let mut account = open_account(ctx, *id)?;
                account.name = name.clone();
                put(ctx, Key::Account(*id), Record::Account(account))?;
                Ok(Done::default())
            }
            Op::Close { id } => {
                let mut account = open_account(ctx, *id)?;
                if account.balance_msat != 0 || account.held_msat != 0 {
                    return Err(LedgerError::NotEmpty {
                        id: *id,
                        balance_msat: account.balance_msat,
                        held_msat: account.held_msat,
                    });
                }
                account.closed = true;
                account.budget = None;
                put(ctx, Key::Account(*id), Record::Account(account))?;
                Ok(Done::default())
            }
            Op::Transfer { from, to, amount_msat, nonce, mac } => {
                let amount = *amount_msat;
                if amount == 0 {
                    return Err(LedgerError::Invalid("a transfer of 0 msat"));
                }
                if from == to {
                    return Err(LedgerError::Invalid("a transfer to the same account"));
                }
                let mut done = Done::default();
                if *from == MAIN {
                    if mac.is_some() {
                        return Err(LedgerError::MainSigned);
                    }
                    let available_msat = main_available(ctx)?;
                    if amount > available_msat {
                        return Err(LedgerError::MainInsufficient { available_msat, needed_msat: amount });
                    }
                    put(ctx, Key::Main, Record::Main(available_msat - amount))?;
                    done.tracked_in_msat = amount;
                } else {
                    let mut payer = open_account(ctx, *from)?;
                    if let Some(mac) = mac {
                        if transfer_hmac(&payer.key, *from, *to, amount, *nonce).verify_slice(mac).is_err() {
                            return Err(LedgerError::BadMac(*from));
                        }
                        if *nonce <= payer.nonce {
                            return Err(LedgerError::Replay { id: *from, nonce: *nonce, last: payer.nonce });
                        }
                        payer.nonce = *nonce;
                    }
                    spend(*from, &mut payer, amount, now)?;
                    payer.balance_msat -= amount;
                    put(ctx, Key::Account(*from), Record::Account(payer))?;
                }
                if *to == MAIN {
                    let available = main_available(ctx)?.checked_add(amount).ok_or_else(overflow)?;
                    put(ctx, Key::Main, Record::Main(available))?;
                    done.tracked_out_msat = amount;
                } else {
                    let mut payee = open_account(ctx, *to)?;
                    payee.balance_msat = payee.balance_msat.checked_add(amount).ok_or_else(overflow)?;
                    put(ctx, Key::Account(*to), Record::Account(payee))?;
                }
                Ok(done)
            }
            Op::Invoice { payment_hash, shares } => {
                if shares.is_empty() || shares.len() > MAX_SHARES {
                    return Err(LedgerError::Invalid("an invoice pays 1 to 16 accounts"));
                }
                if shares.iter().any(|(_, weight)| *weight == 0) {
                    return Err(LedgerError::Invalid("a share of weight 0"));
                }
                for (i, (id, _)) in shares.iter().enumerate() {
                    open_account(ctx, *id)?;
                    if shares[..i].iter().any(|(other, _)| other == id) {
                        return Err(LedgerError::Invalid("an account named twice in the shares"));
                    }
                }
                if get(ctx, Key::Invoice(*payment_hash))?.is_some() {
                    return Err(LedgerError::InvoiceExists);
                }
                let invoice = InvoiceFor { shares: shares.clone(), credited: false };
                put(ctx, Key::Invoice(*payment_hash), Record::Invoice(invoice))?;
                Ok(Done::default())
            }
            Op::Credit { payment_hash, amount_msat } => {
                let Some(Record::Invoice(mut invoice)) = get(ctx, Key::Invoice(*payment_hash))? else {
                    return Err(LedgerError::UnknownInvoice);
                };
                if invoice.credited {
                    return Err(LedgerError::AlreadyCredited);
                }
                // Each share gets its weight's part, rounded down; what rounding leaves goes to
                // the first.
                let total: u128 = invoice.shares.iter().map(|(_, w)| u128::from(*w)).sum();
                let mut parts = Vec::with_capacity(invoice.shares.len());
                for (id, weight) in &invoice.shares {
                    let part = u128::from(*amount_msat) * u128::from(*weight) / total.max(1);
                    parts.push((*id, u64::try_from(part).map_err(|_| overflow())?));
                }
                let given: u64 = parts.iter().map(|(_, p)| *p).sum();
                if let Some(first) = parts.first_mut() {
                    first.1 += amount_msat - given;
                }
                for (id, part) in parts {
                    let mut account = open_account(ctx, id)?;
                    account.balance_msat = account.balance_msat.checked_add(part).ok_or_else(overflow)?;
                    put(ctx, Key::Account(id), Record::Account(account))?;
                }
                invoice.credited = true;
                put(ctx, Key::Invoice(*payment_hash), Record::Invoice(invoice))?;
                Ok(Done { tracked_in_msat: *amount_msat, ..Done::default() })
            }
            Op::Hold { payment_hash, account: id, amount_msat, fee_limit_msat } => {
                if *amount_msat == 0 {
                    return Err(LedgerError::Invalid("a payment of 0 msat"));
                }
                if get(ctx, Key::Hold(*payment_hash))?.is_some() {
                    return Err(LedgerError::HoldExists);
                }
                let mut account = open_account(ctx, *id)?;
                let cost = amount_msat.checked_add(*fee_limit_msat).ok_or_else(overflow)?;
                let window_start = spend(*id, &mut account, cost, now)?;
                account.held_msat += cost;
                let hold = Hold {
                    account: *id,
                    amount_msat: *amount_msat,
                    fee_limit_msat: *fee_limit_msat,
                    window_start,
                };
                put(ctx, Key::Account(*id), Record::Account(account))?;
                put(ctx, Key::Hold(*payment_hash), Record::Hold(hold))?;
                Ok(Done::default())
            }
            Op::Settle { payment_hash, fee_paid_msat } => {
                let Some(Record::Hold(hold)) = get(ctx, Key::Hold(*payment_hash))? else {
                    return Err(LedgerError::UnknownHold);
                };
                let mut account = match get(ctx, Key::Account(hold.account))? {
                    Some(Record::Account(account)) => account,
                    _ => return Err(LedgerError::NoAccount(hold.account)),
                };
                // A fee above the limit (LDK keeps to it) would overdraw: the account pays at
                // most its limit, main the rest.
                let fee = fee_paid_msat.unwrap_or(hold.fee_limit_msat).min(hold.fee_limit_msat);
                let paid = hold.amount_msat + fee;
                account.held_msat = account.held_msat.saturating_sub(hold.cost());
                account.balance_msat = account.balance_msat.saturating_sub(paid);
                unspend(&mut account, hold.fee_limit_msat - fee, hold.window_start);
                put(ctx, Key::Account(hold.account), Record::Account(account))?;
                ctx.delete(&Key::Hold(*payment_hash))
                    .map_err(|_| LedgerError::Undeclared(Key::Hold(*payment_hash)))?;
                Ok(Done { tracked_out_msat: paid, ..Done::default() })
            }
            Op::Release { payment_hash } => {
                let Some(Record::Hold(hold)) = get(ctx, Key::Hold(*payment_hash))? else {
                    return Err(LedgerError::UnknownHold);
                };
                let mut account = match get(ctx, Key::Account(hold.account))? {
                    Some(Record::Account(account)) => account,
                    _ => return Err(LedgerError::NoAccount(hold.account)),
                };
                account.held_msat = account.held_msat.saturating_sub(hold.cost());
                unspend(&mut account, hold.cost(), hold.window_start);
                put(ctx, Key::Account(hold.account), Record::Account(account))?;
                ctx.delete(&Key::Hold(*payment_hash))
                    .map_err(|_| LedgerError::Undeclared(Key::Hold(*payment_hash)))?;
                Ok(Done::default())
            }
            Op::SetBudget { account: id, limit_msat, period_secs } => {
                if *period_secs == 0 {
                    return Err(LedgerError::Invalid("a budget period of 0 s"));
                }
                let mut account = open_account(ctx, *id)?;
                account.budget = limit_msat.map(|limit_msat| Budget {
                    limit_msat,
                    period_secs: *period_secs,
                    window_start: now,
                    spent_msat: 0,
                });
                put(ctx, Key::Account(*id), Record::Account(account))?;
                Ok(Done::default())
            }
        }
    }
}

/// Checks the ledger's invariant over every record (see the module's docs) and returns what
/// it tracks, msat: `Σ balance_msat`. The error names the first record that breaks it.
pub fn check<'a>(records: impl Iterator<Item = (&'a Key, &'a Record)>) -> Result<u64, String> {
    let mut balances: std::collections::HashMap<AccountId, (u64, u64)> = Default::default();
    let mut held: std::collections::HashMap<AccountId, u64> = Default::default();
    for (key, record) in records {
        match (key, record) {
            (Key::Account(id), Record::Account(a)) => {
                if a.held_msat > a.balance_msat {
                    return Err(format!(
                        "account {id} holds {} msat of {} msat",
                        a.held_msat, a.balance_msat
                    ));
                }
                balances.insert(*id, (a.balance_msat, a.held_msat));
            }
            (Key::Hold(_), Record::Hold(h)) => {
                let sum = held.entry(h.account).or_default();
                *sum = sum.checked_add(h.cost()).ok_or("holds overflow")?;
            }
            (Key::Invoice(_), Record::Invoice(_)) | (Key::Main, Record::Main(_)) => {}
            (key, record) => return Err(format!("{key:?} holds {record:?}")),
        }
    }
    let mut tracked: u64 = 0;
    for (id, (balance, account_held)) in &balances {
        let holds = held.remove(id).unwrap_or(0);
        if holds != *account_held {
            return Err(format!("account {id} has {account_held} msat held, its holds {holds} msat"));
        }
        tracked = tracked.checked_add(*balance).ok_or("balances overflow")?;
    }
    if let Some((id, msat)) = held.into_iter().next() {
        return Err(format!("{msat} msat held for account {id}, which does not exist"));
    }
    Ok(tracked)
}
