//! The alarm step: `on_alarm` runs when the room's alarm is due, and the alarm leaves
//! storage in the same commit as the handler's writes.

use super::handler::{Handler, StepError};
use super::RoomActor;
use crate::mailbox::AlarmOutcome;
use crate::time::now_ms;
use tracing::{debug, warn};

/// Alarms retried this many times after a failure, then dropped (as Durable Objects do).
const MAX_ALARM_RETRIES: u32 = 6;

impl RoomActor {
    pub(super) async fn alarm(&mut self, attempt: u32) -> AlarmOutcome {
        // Owned first: until then another node may be running the alarm, or have run it
        // and set the next one.
        if let Err(e) = self.ensure_owned().await {
            // Not this node's room (now): its owner runs the alarm; never drop it here.
            debug!(error = %e, "alarm left to the room's owner");
            return AlarmOutcome::NotRun;
        }
        let due = match self.room.storage().get_alarm().await {
            Ok(Some(at)) if at <= now_ms() => at,
            Ok(_) => return AlarmOutcome::Done,
            Err(e) => {
                warn!(error = %e, "cannot read alarm");
                return self.not_run_or_failed(attempt).await;
            }
        };
        if let Err(e) = self.ensure_started().await {
            warn!(error = %e, "on_start failed before alarm");
            return match e {
                StepError::Handler(_) => self.alarm_failed(attempt).await,
                _ => self.not_run_or_failed(attempt).await,
            };
        }
        // Cleared in the same commit as the handler's writes, unless the handler sets a
        // new one, or `on_start` did (a room woken by its alarm that arms the next one
        // there): that alarm is not the one that fired.
        match self.room.storage().get_alarm().await {
            Ok(Some(at)) if at == due => self.room.storage().delete_alarm(),
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "cannot read alarm");
                return self.not_run_or_failed(attempt).await;
            }
        }
        match self.step(Handler::Alarm).await {
            Ok(_) => AlarmOutcome::Done,
            Err(StepError::Handler(e)) => {
                warn!(due, attempt, error = %e, "on_alarm failed");
                self.alarm_failed(attempt).await
            }
            Err(e) => {
                warn!(due, attempt, error = %e, "on_alarm's step did not commit");
                self.not_run_or_failed(attempt).await
            }
        }
    }

    /// The alarm's handler could not run or commit for a reason not its own (the store, the
    /// claim). While this node may not serve the room (the store cut off fences it, as
    /// does Redis restarting), that is no attempt of the alarm's; otherwise it counts, so
    /// that a commit the store refuses every time does not run the handler for good.
    async fn not_run_or_failed(&mut self, attempt: u32) -> AlarmOutcome {
        if self.fenced || !self.ctx.cluster.is_serving() {
            return AlarmOutcome::NotRun;
        }
        self.alarm_failed(attempt).await
    }

    async fn alarm_failed(&mut self, attempt: u32) -> AlarmOutcome {
        if attempt < MAX_ALARM_RETRIES {
            return AlarmOutcome::Failed;
        }
        warn!(
            attempts = attempt + 1,
            "alarm failed every retry; dropping it"
        );
        self.room.storage().delete_alarm();
        let _ = self.commit_and_release().await;
        AlarmOutcome::Done
    }
}
