//! Alerts as queued work: the instance whose store write caused an incident queues one message per
//! configured sink (`Message::Alert`), and each message is one POST with a short retry schedule.
//! Nothing here can slow or fail a job: queueing errors are logged, sink failures only retry.

use std::time::Duration;

use tracing::{error, info, warn};

use super::step::{Engine, StepOutcome};
use crate::domain::alert::{Alert, AlertRules};
use crate::domain::message::Message;
use crate::ports::outbound::AlertSent;

impl Engine {
    /// What the store needs with each provider event to decide on incidents.
    pub(super) fn alert_rules(&self) -> AlertRules {
        AlertRules {
            providers: self.providers.iter().map(|p| p.name.clone()).collect(),
            window_ms: self.settings.alerts.flap_window_ms,
        }
    }

    /// Logs each incident and queues it for every sink. Never fails: an alert lost to a queue
    /// outage is logged, and the job goes on.
    pub(crate) async fn raise(&self, alerts: Vec<Alert>) {
        for alert in alerts {
            let severity = alert.incident.severity().as_str();
            let kind = alert.incident.kind();
            match alert.incident.severity() {
                crate::domain::alert::Severity::Critical => {
                    error!(kind, severity, suppressed = alert.suppressed, "incident")
                }
                _ => warn!(kind, severity, suppressed = alert.suppressed, "incident"),
            }
            for sink in 0..self.outbound.sinks().len() {
                let message = Message::Alert {
                    alert: alert.clone(),
                    sink,
                    attempt: 1,
                };
                if let Err(e) = self.queue.send(&message, Duration::ZERO).await {
                    warn!(kind, sink, error = %e, "could not queue an alert");
                }
            }
        }
    }

    /// One attempt of one alert to one sink; a failure comes back after the next wait of the
    /// schedule, until the schedule ends.
    pub(crate) async fn send_alert(&self, alert: &Alert, sink_index: usize, attempt: u32) -> StepOutcome {
        let kind = alert.incident.kind();
        let Some(&sink) = self.outbound.sinks().get(sink_index) else {
            // Configured differently when it was queued.
            return StepOutcome::Dropped("alert sink no longer configured");
        };
        let sent = self.outbound.alert(alert, sink_index, self.clock.now_ms()).await;
        let reason = match sent {
            AlertSent::Delivered => {
                info!(kind, sink, attempt, "alert delivered");
                return StepOutcome::Dropped("alert delivered");
            }
            AlertSent::Refused(reason) => {
                error!(kind, sink, reason = %reason, "alert sink refused by the URL guard");
                return StepOutcome::Dropped("alert sink refused");
            }
            AlertSent::Failed(reason) => reason,
        };
        let Some(wait) = self.settings.alerts.retry_ms.get(attempt as usize - 1).copied() else {
            error!(kind, sink, attempt, reason = %reason, "alert not delivered: given up");
            return StepOutcome::Dropped("alert given up");
        };
        warn!(kind, sink, attempt, reason = %reason, retry_in_ms = wait, "alert not delivered");
        let again = Message::Alert {
            alert: alert.clone(),
            sink: sink_index,
            attempt: attempt + 1,
        };
        match self.queue.send(&again, Duration::from_millis(wait)).await {
            Ok(()) => StepOutcome::Rescheduled,
            Err(e) => {
                warn!(kind, error = %e, "could not queue an alert's retry");
                StepOutcome::Dropped("alert retry not queued")
            }
        }
    }
}
