//! A node's liveness: renew `conclave:node:<id>` with a TTL; fence itself when it cannot.

use crate::{left_key, node_key, LivenessTiming, RedisTarget};
use conclave_proto::ClusterAuth;
use futures::future::BoxFuture;
use redis::aio::ConnectionManager;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// How soon a failed renewal is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(100);

/// What a node announces about itself.
#[derive(Clone, Debug)]
pub struct Beat {
    pub id: String,
    /// Where gateways reach the node's relay service.
    pub relay_url: String,
    pub incarnation: u64,
    /// The node's region (each region has its own ring).
    pub region: String,
    /// How the node proves it belongs to the cluster: its secret signs the heartbeat, so
    /// placement believes it; the node follows placement with it.
    pub auth: ClusterAuth,
}

async fn connect(redis: &RedisTarget) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis.client()?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(std::time::Duration::from_millis(500)))
        .set_response_timeout(Some(std::time::Duration::from_millis(500)))
        .set_number_of_retries(1);
    ConnectionManager::new_with_config(client, config).await
}

/// Renews the heartbeat until `leave` turns true; then deletes the key, so placement drops
/// the node at its next poll instead of after the TTL (a drain). A renewal happens only
/// when `fit` says the node can do its work (reach its store) within one heartbeat: alive
/// in Redis must mean able to serve. `on_fence(true)` is called when no renewal succeeded
/// for `timing.self_fence_after` (the node must stop serving), `on_fence(false)` when
/// renewals succeed again. The node starts fenced until its first renewal.
pub async fn run(
    redis: RedisTarget,
    beat: Beat,
    timing: LivenessTiming,
    fit: impl Fn(Duration) -> BoxFuture<'static, bool> + Send + Sync + 'static,
    on_fence: impl Fn(bool) + Send + 'static,
    mut leave: tokio::sync::watch::Receiver<bool>,
) {
    let key = node_key(&beat.id);
    let mut value = serde_json::json!({
        "relay_url": beat.relay_url,
        "incarnation": beat.incarnation,
        "region": beat.region,
    });
    if let Some(secret) = &beat.auth.secret {
        value["sig"] = crate::signed::sign_beat(
            secret,
            &beat.id,
            &beat.relay_url,
            beat.incarnation,
            &beat.region,
        )
        .into();
    }
    let value = value.to_string();
    let ttl_ms = timing.ttl.as_millis() as u64;
    let mut conn: Option<ConnectionManager> = None;
    let mut last_ok: Option<Instant> = None;
    let mut fenced = true;
    let mut was_able = true;
    let mut failing = false;
    on_fence(true);
    let fence = |fenced: &mut bool| {
        *fenced = true;
        warn!(node = %beat.id, "heartbeat not renewed in time: fencing (no room is served until it is)");
        on_fence(true);
    };
    loop {
        let sent = Instant::now();
        let attempt = async {
            if conn.is_none() {
                conn = tokio::time::timeout(timing.heartbeat, connect(&redis))
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
            let able = fit(timing.heartbeat).await;
            let renewed = match conn.as_mut().filter(|_| able) {
                Some(c) => {
                    let mut set = redis::cmd("SET");
                    set.arg(&key).arg(&value).arg("PX").arg(ttl_ms);
                    matches!(
                        tokio::time::timeout(timing.heartbeat, set.query_async::<()>(c)).await,
                        Ok(Ok(()))
                    )
                }
                None => false,
            };
            (able, renewed)
        };
        // An attempt may take up to three heartbeats (connect, the store's answer, the
        // renewal): the node stops serving when its time is up, not when the attempt ends,
        // or it could go on serving after its key expired.
        let fence_at = last_ok
            .filter(|_| !fenced)
            .map(|t| t + timing.self_fence_after);
        let (able, renewed) = match fence_at {
            Some(at) => {
                tokio::pin!(attempt);
                tokio::select! {
                    done = &mut attempt => done,
                    () = tokio::time::sleep_until(at) => {
                        fence(&mut fenced);
                        attempt.await
                    }
                }
            }
            None => attempt.await,
        };
        if able != was_able {
            was_able = able;
            if able {
                info!(node = %beat.id, "the store answers again");
            } else {
                warn!(node = %beat.id, "the store did not answer in time: not renewing the heartbeat until it does");
            }
        }
        if renewed {
            // The key's TTL started no earlier than `sent`: count from there.
            last_ok = Some(sent);
        } else if able && !failing {
            warn!(node = %beat.id, "heartbeat renewal failed; trying again every {RETRY_AFTER_FAILURE:?}");
        }
        failing = !renewed && able;
        let stale = last_ok.is_none_or(|t| t.elapsed() >= timing.self_fence_after);
        // A renewal that took so long that its time is up already serves nothing.
        if renewed && fenced && !stale {
            fenced = false;
            info!(node = %beat.id, "heartbeat renewed: serving");
            on_fence(false);
        }
        if stale && !fenced {
            fence(&mut fenced);
        }
        // A renewal that failed while the store answers is tried again soon: a Redis that
        // restarts within the fencing window then costs no room a moment of service.
        let pause = if renewed || !able {
            timing.heartbeat
        } else {
            timing.heartbeat.min(RETRY_AFTER_FAILURE)
        };
        tokio::select! {
            _ = tokio::time::sleep_until(sent + pause) => {}
            _ = async { leave.wait_for(|l| *l).await.is_ok() } => {
                if let Some(c) = conn.as_mut() {
                    let mut leave = redis::pipe();
                    leave.atomic().del(&key);
                    leave.cmd("SET").arg(left_key(&beat.id)).arg(1).arg("PX").arg(ttl_ms * 2);
                    let _ = tokio::time::timeout(timing.heartbeat, leave.query_async::<()>(c)).await;
                }
                info!(node = %beat.id, "left the cluster");
                // No renewal from now on: the node may serve only until its time since the
                // last one is up, as when renewals fail. The ring without it normally
                // comes first; this holds when it does not (placement cut off from Redis,
                // the key's deletion lost).
                if let Some(last) = last_ok.filter(|_| !fenced) {
                    tokio::time::sleep_until(last + timing.self_fence_after).await;
                    info!(node = %beat.id, "left the cluster: no longer serving");
                    on_fence(true);
                }
                return;
            }
        }
    }
}
