//! Alerts as queued work: the instance whose store write caused an incident queues one message per
//! configured sink (`Message::Alert`), and each message is one POST with a short retry schedule.
//! Nothing here can slow or fail a job: queueing errors are logged, sink failures only retry.

use std::time::Duration;

use tracing::{error, info, warn};

use super::step::{Engine, StepOutcome};
use crate::adapters::outbound::alert_sink::{self, Sent};
use crate::domain::alert::{Alert, AlertRules};
use crate::domain::message::Message;

/// How long one alert POST may take.
const ALERT_TIMEOUT: Duration = Duration::from_secs(5);

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
            for sink in 0..self.settings.alerts.sinks.len() {
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
        let settings = &self.settings.alerts;
        let kind = alert.incident.kind();
        let Some(sink) = settings.sinks.get(sink_index) else {
            // Configured differently when it was queued.
            return StepOutcome::Dropped("alert sink no longer configured");
        };
        let sent = alert_sink::send(
            sink,
            alert,
            settings.secrets.as_ref(),
            &self.settings.url_guard,
            &self.settings.scrubber,
            self.clock.now_ms(),
            ALERT_TIMEOUT,
        )
        .await;
        let reason = match sent {
            Sent::Delivered => {
                info!(kind, sink = sink.kind.as_str(), attempt, "alert delivered");
                return StepOutcome::Dropped("alert delivered");
            }
            Sent::Refused(reason) => {
                error!(kind, sink = sink.kind.as_str(), reason = %reason, "alert sink refused by the URL guard");
                return StepOutcome::Dropped("alert sink refused");
            }
            Sent::Failed(reason) => reason,
        };
        let Some(wait) = settings.retry_ms.get(attempt as usize - 1).copied() else {
            error!(kind, sink = sink.kind.as_str(), attempt, reason = %reason, "alert not delivered: given up");
            return StepOutcome::Dropped("alert given up");
        };
        warn!(kind, sink = sink.kind.as_str(), attempt, reason = %reason, retry_in_ms = wait, "alert not delivered");
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
