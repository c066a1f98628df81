#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::print_stderr, missing_docs)]
//! Two `salesync sync` processes on one PostgreSQL schema: only the leader pulls from Marketo,
//! both deliver; outbound items recorded while they run reach Marketo and Salesforce exactly once;
//! when the leader is SIGKILLed, the other takes the pull over within the lease TTL (plus its
//! poll) and brings the mirror to the oracle again.
//!
//! Who pulls is read from the Marketo emulator's call log: each process authenticates as its own
//! API client, and the log names the client of every call; lead reads, lead changes, deleted
//! leads and bulk lead exports are the pull's alone (delivery never calls them).

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use salesync::core::ports::store::StreamId;
use salesync::engine::MARKETO_PULL_LEASE;
use support::*;

/// Counted Marketo calls per one-second window in the emulator; each process gets half.
const RATE: u32 = 60;
const TTL: Duration = Duration::from_millis(2000);
const PEOPLE: usize = 300;

/// The clients whose tokens made pull calls in `log[from..]`, and the arrival of the first one
/// of `client`'s.
fn pullers(world: &World, from: usize) -> BTreeSet<String> {
    world.marketo.call_log()[from..].iter().filter(|c| is_pull(&c.path)).filter_map(|c| c.client_id.clone()).collect()
}

fn first_pull_by(world: &World, from: usize, client: &str) -> Option<Instant> {
    world.marketo.call_log()[from..]
        .iter()
        .find(|c| is_pull(&c.path) && c.client_id.as_deref() == Some(client))
        .map(|c| c.at)
}

async fn converged(world: &World, shared: &TestStore) -> Result<(), String> {
    let store = shared.store.as_ref();
    let done = store.checkpoint(StreamId::InitialSync).await.unwrap().is_some_and(|cp| cp.position["status"] == "done");
    let diff = world.mirror_diff(store).await;
    let drained = outbox_drained(store).await;
    let pending: Vec<_> = store
        .outbox_items(salesync::core::ports::store::OutboxState::Pending, 5)
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.key, i.attempts, i.next_attempt_at, i.last_error))
        .collect();
    if done && diff.is_empty() && drained {
        Ok(())
    } else {
        Err(format!("initial done {done}, outbox drained {drained} {pending:?}, mirror: {diff}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_one_puller_failover_within_the_lease_and_exactly_once_delivery() {
    let shared = shared_postgres("multi").await;
    shared.dropper().around(failover(shared)).await;
}

async fn failover(shared: TestStore) {
    let world = World::scaled(PEOPLE, 0x0907, RATE, &[("node-a", "secret-a"), ("node-b", "secret-b")]).await;
    let mut rng = Rng::new(0x0907);
    let node_env = |client: usize, name: &str| {
        let mut env = child_env(&world, &shared.url, client, RATE / 2, name);
        env.push(("SALESYNC_LEASE_TTL_MS".into(), TTL.as_millis().to_string()));
        env.push(("SALESYNC_INITIAL_MODE".into(), "rest".into()));
        env
    };
    let mut nodes = [
        SyncChild::spawn(shared.dir.path(), "node-a", &node_env(1, "node-a"), &[]),
        SyncChild::spawn(shared.dir.path(), "node-b", &node_env(2, "node-b"), &[]),
    ];
    let started = Instant::now();
    let d = world.dispatcher(shared.store.clone());
    let mut out = Outbound::default();

    // Outbound items recorded while both run (as soon as there are people to record for).
    wait_for(Duration::from_secs(30), "first people in the mirror", || async {
        let n = shared.store.count_people().await.unwrap();
        if n >= 50 { Ok(()) } else { Err(format!("{n} people")) }
    })
    .await;
    for _ in 0..3 {
        record_round(&world, &d, shared.store.as_ref(), &mut rng, 6, &mut out).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_for(Duration::from_secs(60), "convergence with two processes", || converged(&world, &shared)).await;
    eprintln!("converged with two processes after {:?}", started.elapsed());
    for n in &mut nodes {
        assert!(n.running(), "{} exited: {}", n.name, n.stderr());
    }

    // Exactly one process pulled.
    let pulled = pullers(&world, 0);
    assert_eq!(pulled.len(), 1, "pull calls came from {pulled:?}");
    let leader = pulled.into_iter().next().unwrap();
    let (li, fi) = if leader == "node-a" { (0, 1) } else { (1, 0) };
    let follower = nodes[fi].name.clone();
    assert!(nodes[li].stderr().contains(&format!("leader: acquired as {leader}")), "{}", nodes[li].stderr());
    assert!(!nodes[fi].stderr().contains("leader: acquired"), "{}", nodes[fi].stderr());
    // Both delivered (the follower's delivery is not held back by the lease).
    let delivering: BTreeSet<String> = world
        .marketo
        .call_log()
        .iter()
        .filter(|c| c.path.starts_with("/rest/v1/activities/external"))
        .filter_map(|c| c.client_id.clone())
        .collect();
    assert_eq!(delivering.len(), 2, "custom activity calls came from {delivering:?}");

    // SIGKILL the leader; change people in Marketo; record more items.
    let mark = world.marketo.call_log().len();
    let killed_at = Instant::now();
    nodes[li].kill();
    world.mutate(&mut rng, 0);
    world.mutate(&mut rng, 1);
    record_round(&world, &d, shared.store.as_ref(), &mut rng, 6, &mut out).await;

    // The follower takes over once the lease expires (it was renewed at most a third of the TTL
    // before the kill) and within the TTL plus its poll (TTL / 4) and some slack.
    wait_for(TTL * 3, "takeover by the follower", || async {
        match first_pull_by(&world, mark, &follower) {
            Some(_) => Ok(()),
            None => Err("no pull call by the follower yet".into()),
        }
    })
    .await;
    let took_over = first_pull_by(&world, mark, &follower).unwrap().duration_since(killed_at);
    eprintln!("takeover {took_over:?} after the kill (lease TTL {TTL:?})");
    assert!(took_over >= TTL / 2, "took over after {took_over:?}, while the dead leader's lease was valid");
    assert!(took_over <= TTL + TTL / 4 + Duration::from_millis(1500), "took over only after {took_over:?}");
    assert_eq!(pullers(&world, mark), BTreeSet::from([follower.clone()]));

    // Everything the dead leader left pending or in flight is delivered by the survivor, and the
    // changes made after the kill reach the mirror.
    wait_for(Duration::from_secs(20), "convergence after the failover", || converged(&world, &shared)).await;
    eprintln!("converged again {:?} after the kill", killed_at.elapsed());
    assert!(nodes[fi].stderr().contains(&format!("leader: acquired as {follower}")), "{}", nodes[fi].stderr());

    // A clean stop releases the lease at once.
    assert_eq!(nodes[fi].terminate().await, Some(0), "{}", nodes[fi].stderr());
    assert!(
        shared.store.try_lease(MARKETO_PULL_LEASE, "probe", TTL, chrono::Utc::now()).await.unwrap(),
        "lease not released on SIGTERM"
    );

    assert_delivered_exactly_once(&world, shared.store.as_ref(), &out).await;
    assert_rate_limits_kept(&world);
    shared.cleanup().await;
}

/// `salesync sync --once` (a cron-style host on several machines): while another process holds
/// the lease, the pull is skipped (exit 0, said on stdout) and delivery still runs; the
/// process that pulls releases the lease when done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_once_skips_the_pull_while_another_process_leads_and_still_delivers() {
    let world = World::scaled(120, 0x0908, RATE, &[]).await;
    let shared = shared_sqlite().await;
    let env = child_env(&world, &shared.url, 0, RATE, "cron-a");
    let once = |env: &[(String, String)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_salesync"))
            .current_dir(shared.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(["sync", "--once"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let first = once(&env);
    assert!(first.starts_with("sync: ") && !first.contains("sync: skipped"), "{first}");
    assert!(world.mirror_diff(shared.store.as_ref()).await.is_empty());
    // Released at the end of the pass: another holder gets it at once.
    let now = chrono::Utc::now();
    assert!(shared.store.try_lease(MARKETO_PULL_LEASE, "cron-b", Duration::from_secs(600), now).await.unwrap());

    // cron-b leads now: cron-a delivers what was recorded but pulls nothing.
    let mut rng = Rng::new(0x0908);
    let mut out = Outbound::default();
    let d = world.dispatcher(shared.store.clone());
    record_round(&world, &d, shared.store.as_ref(), &mut rng, 4, &mut out).await;
    world.mutate(&mut rng, 0);
    let pulls_before = world.marketo.call_log().iter().filter(|c| is_pull(&c.path)).count();
    let second = once(&env);
    assert!(second.contains("sync: skipped (not the leader"), "{second}");
    assert!(second.contains("delivery: 4 to Marketo"), "{second}");
    assert_eq!(world.marketo.call_log().iter().filter(|c| is_pull(&c.path)).count(), pulls_before, "pulled");
    assert!(!world.mirror_diff(shared.store.as_ref()).await.is_empty(), "the mutations were pulled");
    assert_delivered_exactly_once(&world, shared.store.as_ref(), &out).await;
}
