//! What the audit reads: order-service's orders and rewards-service's ledger
//! (credits and reversals) and balances through their HTTP APIs (never
//! another service's database),
//! the stream's `OrderPlaced` events, and the operator's list of
//! acknowledged orders.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context as _;
use async_nats::jetstream::consumer::DeliverPolicy;
use futures::{StreamExt as _, TryStreamExt as _};
use rewards_service::db::EntryKind;
use serde::Deserialize;
use shared_events::Names;
use uuid::Uuid;

use super::checks::Observed;
use super::{Credit, Order};
use crate::AuditArgs;

/// Balances asked for at once.
const CONCURRENT_LOOKUPS: usize = 16;

#[derive(Deserialize)]
struct OrderPage {
    orders: Vec<Order>,
    next_after: Option<Uuid>,
}

#[derive(Deserialize)]
struct LedgerPage {
    entries: Vec<Credit>,
    next_after: Option<Uuid>,
}

#[derive(Deserialize)]
struct Rewards {
    balance: i64,
}

pub(super) async fn everything(args: &AuditArgs) -> anyhow::Result<Observed> {
    let acknowledged = match &args.acknowledged {
        Some(path) => Some(acknowledged(path)?),
        None => None,
    };
    let http = reqwest::Client::new();
    let orders = pages(&http, &args.orders, "orders?limit=500", |p: OrderPage| {
        (p.orders, p.next_after)
    })
    .await?;
    let (credits, reversals): (Vec<Credit>, Vec<Credit>) = pages(
        &http,
        &args.rewards,
        "ledger?limit=1000",
        |p: LedgerPage| (p.entries, p.next_after),
    )
    .await?
    .into_iter()
    .partition(|entry| entry.kind == EntryKind::Credit);
    let customers: BTreeSet<&str> = orders
        .iter()
        .map(|o| o.customer_id.as_str())
        .chain(credits.iter().map(|c| c.customer_id.as_str()))
        .collect();
    let balances = balances(&http, &args.rewards, customers).await?;
    let published = published(args).await?;
    Ok(Observed {
        orders,
        credits,
        reversals,
        balances,
        published,
        acknowledged,
    })
}

/// Every item of a paginated list at `base/first`.
async fn pages<P: serde::de::DeserializeOwned, T>(
    http: &reqwest::Client,
    base: &str,
    first: &str,
    split: impl Fn(P) -> (Vec<T>, Option<Uuid>),
) -> anyhow::Result<Vec<T>> {
    let mut all = Vec::new();
    let mut url = format!("{base}/{first}");
    loop {
        let (items, next) = split(get(http, &url).await?.json().await.context(url.clone())?);
        all.extend(items);
        match next {
            Some(next) => url = format!("{base}/{first}&after={next}"),
            None => return Ok(all),
        }
    }
}

/// Each customer's balance; 0 for one without an account.
async fn balances(
    http: &reqwest::Client,
    base: &str,
    customers: BTreeSet<&str>,
) -> anyhow::Result<BTreeMap<String, i64>> {
    futures::stream::iter(customers)
        .map(|customer| async move {
            let mut url = reqwest::Url::parse(base).with_context(|| format!("{base:?}"))?;
            url.path_segments_mut()
                .map_err(|()| anyhow::anyhow!("{base:?} cannot be a base URL"))?
                .extend(["customers", customer, "rewards"]);
            let response = http.get(url.clone()).send().await.context(url.clone())?;
            let balance = if response.status() == reqwest::StatusCode::NOT_FOUND {
                0
            } else {
                let response = response.error_for_status()?;
                response.json::<Rewards>().await.context(url)?.balance
            };
            Ok::<_, anyhow::Error>((customer.to_owned(), balance))
        })
        .buffer_unordered(CONCURRENT_LOOKUPS)
        .try_collect()
        .await
}

async fn get(http: &reqwest::Client, url: &str) -> anyhow::Result<reqwest::Response> {
    let response = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    anyhow::ensure!(status.is_success(), "GET {url}: {status}");
    Ok(response)
}

/// Every order the stream holds, with its event ids.
async fn published(
    args: &AuditArgs,
) -> anyhow::Result<std::collections::HashMap<Uuid, BTreeSet<Uuid>>> {
    let names = Names::new(&args.events_prefix)?;
    let (_, mut stream) = crate::stream::open(&args.nats_url, &names).await?;
    crate::stream::placed_events(&mut stream, &names, DeliverPolicy::All).await
}

/// The order ids in `path`, one a line (blank lines skipped).
fn acknowledged(path: &Path) -> anyhow::Result<BTreeSet<Uuid>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --acknowledged {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            line.trim().parse().with_context(|| {
                format!(
                    "--acknowledged {} line {}: {line:?} is not an order id",
                    path.display(),
                    i + 1
                )
            })
        })
        .collect()
}
