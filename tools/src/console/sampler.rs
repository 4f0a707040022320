//! The sampler: what a lane did, read twice a second from its databases
//! (what was stored and credited, the consistency lag over the last
//! seconds, the audit of orders without a credit, the followed order), and
//! the lane as the page shows it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use uuid::Uuid;

use super::lane::Lane;
use super::view::{Followed, LaneView};

/// How old an order without a credit must be before the audit counts it:
/// younger ones are in flight.
pub const AUDIT_GRACE: Duration = Duration::from_secs(5);
/// The window of the lag percentiles.
pub const LAG_WINDOW: Duration = Duration::from_secs(10);

impl Lane {
    /// Reads the databases: what was stored and credited, the lag, the audit.
    pub(super) async fn sample(&self) {
        let stored: Option<i64> = sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(&self.orders_db)
            .await
            .ok();
        let stored_before: Option<i64> = sqlx::query_scalar(
            "SELECT count(*) FROM orders WHERE created_at < now() - make_interval(secs => $1)",
        )
        .bind(AUDIT_GRACE.as_secs_f64())
        .fetch_one(&self.orders_db)
        .await
        .ok();
        let credits: Option<(i64, i64, Option<f64>, Option<f64>)> = sqlx::query_as(
            "SELECT count(*),
                    count(*) FILTER (WHERE order_placed_at < now() - make_interval(secs => $1)),
                    1000 * percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM credited_at - order_placed_at)::float8)
                        FILTER (WHERE credited_at > now() - make_interval(secs => $2)),
                    1000 * percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM credited_at - order_placed_at)::float8)
                        FILTER (WHERE credited_at > now() - make_interval(secs => $2))
             FROM reward_ledger WHERE kind = 'credit'",
        )
        .bind(AUDIT_GRACE.as_secs_f64())
        .bind(LAG_WINDOW.as_secs_f64())
        .fetch_one(&self.rewards_db)
        .await
        .ok();
        let followed = self.followed.lock().unwrap().clone();
        let followed = match followed.as_ref().and_then(|f| f.order_id.map(|id| (f, id))) {
            Some((followed, id)) => {
                let stored: Option<i64> =
                    sqlx::query_scalar("SELECT count(*) FROM orders WHERE id = $1")
                        .bind(id)
                        .fetch_one(&self.orders_db)
                        .await
                        .ok();
                let credit: Option<(Uuid, i64)> = sqlx::query_as(
                    "SELECT event_id, points FROM reward_ledger WHERE order_id = $1 AND kind = 'credit'",
                )
                .bind(id)
                .fetch_optional(&self.rewards_db)
                .await
                .ok()
                .flatten();
                Some(Followed {
                    stored: stored == Some(1),
                    event_id: credit.map(|(event, _)| event),
                    credited_points: credit.map(|(_, points)| points),
                    ..followed.clone()
                })
            }
            None => followed,
        };
        if let Some(followed) = followed {
            let mut slot = self.followed.lock().unwrap();
            if slot.as_ref().is_some_and(|f| f.key == followed.key) {
                *slot = Some(followed);
            }
        }
        let mut sample = self.sample.lock().unwrap();
        if let Some(stored) = stored {
            sample.stored = stored;
        }
        if let (Some(before), Some((credited, credited_before, p50, p99))) =
            (stored_before, credits)
        {
            sample.credited = credited;
            sample.without_credit = (before - credited_before).max(0);
            sample.lag_p50_ms = p50;
            sample.lag_p99_ms = p99;
        }
    }

    pub(super) async fn view(&self) -> LaneView {
        let order_service_up = self
            .order_service
            .try_lock()
            .is_ok_and(|mut s| s.as_mut().is_some_and(|s| !s.has_exited()));
        let rewards_service_up = self
            .rewards_service
            .try_lock()
            .is_ok_and(|mut s| s.as_mut().is_some_and(|s| !s.has_exited()));
        let sample = self.sample.lock().unwrap().clone();
        let placed = self.placed.load(Ordering::Relaxed);
        LaneView {
            mode: self.mode.name(),
            order_service_up,
            rewards_service_up,
            crash_armed: self.crash_armed.load(Ordering::Relaxed)
                || self.crash_next.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            placed,
            // Unanswered, and answered but not credited yet.
            in_flight: i64::try_from(placed + self.sending.load(Ordering::Relaxed))
                .unwrap_or(i64::MAX)
                - sample.credited,
            sample,
            followed: self.followed.lock().unwrap().clone(),
        }
    }
}
