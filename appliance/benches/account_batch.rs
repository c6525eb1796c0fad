//! `cargo bench -p boltbox --bench account_batch`: the control socket's batch form of account
//! transfers, against a real `boltbox run` on regtest (a peer opened a channel to it and pushed
//! it money; 1,000 accounts funded from main). Batches of signed transfers are sent as
//! `{"cmd":"account","op":"batch"}` requests, one at a time, as a till or an app would; each
//! answer comes once the batch is durable. Reported: transfers/s and where a batch's time goes
//! (the client's JSON encoding, the round trip: the socket, the service's decoding, the
//! ledger's execution and commit, the answer). Never asserted.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use boltbox::accounts::{AccountRequest, BatchTransfer};
use boltbox::control::{Client, Request};
use boltbox_node::NodeEvent;
use boltbox_node::accounts::{hex, parse_hex32, transfer_mac};
use boltbox_tests::{BitcoinD, Deadline, Rng, TestNode};

const ACCOUNTS: u64 = 1_000;
const FUNDS_MSAT: u64 = 100_000;

fn call(client: &mut Client, request: AccountRequest) -> serde_json::Value {
    client.call(&Request::Account(request)).expect("the service answers")
}

fn main() {
    let bitcoind = BitcoinD::start().expect("bitcoind");
    bitcoind.mine(101).expect("mine");
    let dir = tempfile::tempdir().expect("tmp");
    let (node, config, _link) = common::link_appliance(&bitcoind, dir.path(), "benchbox");
    let run = common::Appliance::start(&config, dir.path().join("run.log"), None);
    let id = common::wait_status(&config, "the node running", common::BOOT, |s| {
        s["running"] == true && s["node_id"].as_str().is_some_and(|id| !id.is_empty())
    })["node_id"]
        .as_str()
        .expect("id")
        .to_string();

    // A peer opens a channel and pushes half of it: main has money to fund the accounts.
    let mut peer = TestNode::start(&bitcoind, "peer", Vec::new());
    peer.fund(&bitcoind, 2_000_000);
    bitcoind.mine(6).expect("mine");
    peer.wait_status("peer funds", 60, |s| s.balances.onchain_spendable_sats >= 1_500_000);
    let address = format!("{id}@{}", node.listen[0]).parse().expect("address");
    let mempool = bitcoind.mempool().expect("mempool").len();
    peer.node().open_channel(&address, 1_000_000, Some(500_000_000), true).expect("open");
    peer.wait_event("ChannelPending", 30, |e| matches!(e, NodeEvent::ChannelPending { .. }).then_some(()));
    bitcoind.wait_for_mempool(mempool + 1, Deadline::in_secs(30));
    bitcoind.mine(6).expect("mine");
    common::wait_status(&config, "the channel usable", common::BOOT, |s| {
        s["channels"].as_array().is_some_and(|c| c.iter().any(|c| c["usable"] == true))
    });

    let socket = boltbox::control::socket_path(&node.data_dir);
    let mut client = Client::connect(&socket).expect("connect");
    client.set_timeout(Duration::from_secs(600)).expect("timeout");
    let mut keys = vec![[0u8; 32]];
    for i in 1..=ACCOUNTS {
        let answer = call(&mut client, AccountRequest::New { name: format!("till-{i}") });
        assert_eq!(answer["id"].as_u64(), Some(i), "{answer}");
        keys.push(parse_hex32(answer["key"].as_str().expect("key")).expect("hex key"));
    }
    let funds = (1..=ACCOUNTS)
        .map(|to| BatchTransfer { from: 0, to, amount_msat: FUNDS_MSAT, nonce: 0, mac: None })
        .collect();
    let answer = call(&mut client, AccountRequest::Batch { transfers: funds });
    assert_eq!(answer["applied"].as_u64(), Some(ACCOUNTS), "{answer}");

    println!(
        "accounts over the control socket: batches of signed transfers, {ACCOUNTS} accounts, a real boltbox run"
    );
    println!(
        "{:>6} {:>8} {:>13} {:>12} {:>14}",
        "batch", "batches", "transfers/s", "encode ms", "round trip ms"
    );
    let mut rng = Rng::new(0x2545_F491_4F6C_DD1D);
    let mut nonces = vec![0u64; ACCOUNTS as usize + 1];
    for (size, count) in [(100usize, 50usize), (1_000, 20), (10_000, 10)] {
        let (mut encode, mut round_trip, mut transfers) = (Duration::ZERO, Duration::ZERO, 0u64);
        for _ in 0..count {
            let batch: Vec<BatchTransfer> = (0..size)
                .map(|_| {
                    let from = 1 + rng.below(ACCOUNTS);
                    let to = 1 + rng.below(ACCOUNTS);
                    let amount_msat = 1 + rng.below(10);
                    nonces[from as usize] += 1;
                    let nonce = nonces[from as usize];
                    let mac = hex(&transfer_mac(&keys[from as usize], from, to, amount_msat, nonce));
                    BatchTransfer { from, to, amount_msat, nonce, mac: Some(mac) }
                })
                .collect();
            let request = Request::Account(AccountRequest::Batch { transfers: batch });
            let started = Instant::now();
            let line = serde_json::to_string(&request).expect("encode");
            encode += started.elapsed();
            drop(line);
            let started = Instant::now();
            let answer = client.call(&request).expect("answer");
            round_trip += started.elapsed();
            let applied = answer["applied"].as_u64().expect("applied");
            let refused = answer["refused"].as_array().map_or(0, Vec::len);
            // Transfers to itself are refused; nothing else may be.
            assert!(applied as usize + refused == size, "{answer}");
            transfers += applied;
        }
        let secs = (encode + round_trip).as_secs_f64();
        println!(
            "{:>6} {:>8} {:>13.0} {:>12.2} {:>14.2}",
            size,
            count,
            transfers as f64 / secs.max(f64::MIN_POSITIVE),
            1e3 * encode.as_secs_f64() / count as f64,
            1e3 * round_trip.as_secs_f64() / count as f64
        );
    }
    println!(
        "(encode: the client's JSON of one request (signing not counted); round trip: socket, the \
         service's decoding, the ledger's execution and commit, the answer)"
    );
    run.sigterm();
}
