//! `boltbox account …` on the service's side: the control socket's account requests, carried
//! out on the node's ledger (docs/ACCOUNTS.md). Accounts are named by id (digits) or name;
//! `main` (or 0) is the owner's main account.

use std::time::Duration;

use boltbox_node::BoltNode;
use boltbox_node::accounts::{self, AccountId, LedgerError, MAIN, Op};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The most transfers in one batch request.
pub const MAX_BATCH: usize = 10_000;
/// How long `account pay` waits for the payment's outcome before answering "pending".
const PAY_WAIT: Duration = Duration::from_secs(50);

/// One transfer of a batch (`boltbox account batch`: one JSON object per line on stdin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchTransfer {
    /// Paying account id (0: main, only unsigned).
    pub from: AccountId,
    /// Receiving account id (0: main).
    pub to: AccountId,
    /// Amount, msat.
    pub amount_msat: u64,
    /// With `mac`: above every earlier signed transfer's nonce of the payer.
    #[serde(default)]
    pub nonce: u64,
    /// The transfer's HMAC-SHA256 with the payer's key, hex
    /// ([`boltbox_node::accounts::transfer_mac`]).
    #[serde(default)]
    pub mac: Option<String>,
}

/// An account request (`{"cmd": "account", "op": …}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AccountRequest {
    /// Opens an account; the answer carries its id and its transfer key (hex, shown once).
    New {
        /// Its name.
        name: String,
    },
    /// Every open account.
    List,
    /// One account.
    Show {
        /// Id or name.
        account: String,
    },
    /// Renames an account.
    Rename {
        /// Id or name.
        account: String,
        /// The new name.
        name: String,
    },
    /// Closes an empty account.
    Close {
        /// Id or name.
        account: String,
    },
    /// Moves money between accounts (`main` on either side).
    Transfer {
        /// Paying account.
        from: String,
        /// Receiving account.
        to: String,
        /// Amount, msat.
        amount_msat: u64,
    },
    /// Many transfers in one durable batch.
    Batch {
        /// At most [`MAX_BATCH`].
        transfers: Vec<BatchTransfer>,
    },
    /// A BOLT11 invoice credited to accounts by weight (one account: its own invoice).
    Invoice {
        /// (id or name, weight).
        shares: Vec<(String, u32)>,
        /// Amount, msat; `None`: any amount.
        amount_msat: Option<u64>,
        /// Description.
        description: String,
        /// Expiry, seconds.
        expiry_secs: u32,
    },
    /// Pays a BOLT11 invoice from an account and waits (up to 50 s) for the outcome.
    Pay {
        /// Id or name.
        account: String,
        /// The invoice.
        invoice: String,
        /// The most fee, msat (default 1% + 50 sat).
        fee_limit_msat: Option<u64>,
    },
    /// Sets or removes a spending budget.
    Budget {
        /// Id or name.
        account: String,
        /// Per period, msat; `None` removes it.
        limit_msat: Option<u64>,
        /// The period, seconds.
        period_secs: u64,
    },
}

fn resolve(node: &BoltNode, account: &str) -> Result<AccountId, String> {
    if account == "main" {
        return Ok(MAIN);
    }
    node.accounts().resolve(account).ok_or_else(|| format!("no open account {account:?}"))
}

fn refused(e: LedgerError) -> String {
    e.to_string()
}

fn one(node: &BoltNode, op: Op) -> Result<(), String> {
    let mut out = node.account_ops(vec![op]).map_err(|e| e.to_string())?;
    out.pop().unwrap_or(Err(LedgerError::Invalid("no outcome"))).map(|_| ()).map_err(refused)
}

fn show(node: &BoltNode, id: AccountId) -> Result<Value, String> {
    let view = node.accounts().show(id).ok_or_else(|| format!("no open account {id}"))?;
    serde_json::to_value(view).map_err(|e| e.to_string())
}

/// Turns a batch line into a ledger operation; its error says what is wrong with it.
pub fn transfer_op(t: &BatchTransfer) -> Result<Op, String> {
    let mac = match &t.mac {
        None => None,
        Some(text) => Some(accounts::parse_hex32(text).ok_or("mac: not 64 hex digits")?),
    };
    Ok(Op::Transfer { from: t.from, to: t.to, amount_msat: t.amount_msat, nonce: t.nonce, mac })
}

/// Carries out an account request on the running node.
pub fn handle(node: &BoltNode, request: AccountRequest) -> Result<Value, String> {
    Ok(match request {
        AccountRequest::New { name } => {
            let key = accounts::new_account_key().map_err(|e| e.to_string())?;
            let mut out = node
                .account_ops(vec![Op::Open { id: 0, name: name.clone(), key }])
                .map_err(|e| e.to_string())?;
            let done = out.pop().unwrap_or(Err(LedgerError::Invalid("no outcome"))).map_err(refused)?;
            let id = done.opened.ok_or("the account was not opened")?;
            json!({ "id": id, "name": name, "key": accounts::hex(&key) })
        }
        AccountRequest::List => json!({
            "main_msat": node.main_account_msat(),
            "accounts": node.accounts().list(),
        }),
        AccountRequest::Show { account } => match resolve(node, &account)? {
            MAIN => json!({ "id": MAIN, "name": "main", "balance_msat": node.main_account_msat() }),
            id => show(node, id)?,
        },
        AccountRequest::Rename { account, name } => {
            let id = resolve(node, &account)?;
            one(node, Op::Rename { id, name })?;
            show(node, id)?
        }
        AccountRequest::Close { account } => {
            one(node, Op::Close { id: resolve(node, &account)? })?;
            Value::Null
        }
        AccountRequest::Transfer { from, to, amount_msat } => {
            let (from, to) = (resolve(node, &from)?, resolve(node, &to)?);
            one(node, Op::Transfer { from, to, amount_msat, nonce: 0, mac: None })?;
            Value::Null
        }
        AccountRequest::Batch { transfers } => {
            if transfers.len() > MAX_BATCH {
                return Err(format!("{} transfers; a batch has at most {MAX_BATCH}", transfers.len()));
            }
            // A malformed line is refused by itself; the others run.
            let mut refused = Vec::new();
            let mut ops = Vec::with_capacity(transfers.len());
            let mut index = Vec::with_capacity(transfers.len());
            for (i, t) in transfers.iter().enumerate() {
                match transfer_op(t) {
                    Ok(op) => {
                        ops.push(op);
                        index.push(i);
                    }
                    Err(why) => refused.push(json!({ "index": i, "reason": why })),
                }
            }
            let out = node.account_ops(ops).map_err(|e| e.to_string())?;
            let mut applied = 0u64;
            for (i, result) in index.into_iter().zip(out) {
                match result {
                    Ok(_) => applied += 1,
                    Err(e) => refused.push(json!({ "index": i, "reason": e.to_string() })),
                }
            }
            json!({ "applied": applied, "refused": refused })
        }
        AccountRequest::Invoice { shares, amount_msat, description, expiry_secs } => {
            let shares = shares
                .iter()
                .map(|(a, w)| Ok((resolve(node, a)?, *w)))
                .collect::<Result<Vec<_>, String>>()?;
            if shares.iter().any(|(id, _)| *id == MAIN) {
                return Err("an invoice for accounts cannot pay main (make a plain invoice)".into());
            }
            json!(
                node.account_invoice(shares, amount_msat, &description, expiry_secs)
                    .map_err(|e| e.to_string())?
            )
        }
        AccountRequest::Pay { account, invoice, fee_limit_msat } => {
            let id = resolve(node, &account)?;
            if id == MAIN {
                return Err("main pays with `boltbox pay`".into());
            }
            let payment = node.account_pay(id, &invoice, fee_limit_msat).map_err(|e| e.to_string())?;
            let hash = accounts::parse_hex32(&payment.payment_hash).ok_or("bad payment hash")?;
            let done = node.accounts().wait_hold_gone(&hash, PAY_WAIT);
            let outcome = match (done, node.payment_status(&payment.payment_hash)) {
                (false, _) => "pending",
                (true, Some(status)) if status == "succeeded" => "succeeded",
                (true, _) => "failed",
            };
            json!({
                "payment_hash": payment.payment_hash,
                "amount_msat": payment.amount_msat,
                "fee_limit_msat": payment.fee_limit_msat,
                "outcome": outcome,
                "account": show(node, id)?,
            })
        }
        AccountRequest::Budget { account, limit_msat, period_secs } => {
            let id = resolve(node, &account)?;
            one(node, Op::SetBudget { account: id, limit_msat, period_secs })?;
            show(node, id)?
        }
    })
}
