// Prometheus metrics of the worker: jobs claimed/done/failed/retried by project, job
// durations, queue depth, webhook requests by status; served by GET /metrics.
use crate::job_state::TryEnd;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectLabel {
    pub project: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

fn job_histogram() -> Histogram {
    // 1 ms .. ~9 min
    Histogram::new(exponential_buckets(0.001, 2.5, 15))
}

fn webhook_histogram() -> Histogram {
    // 1 ms .. ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    pub claimed: Family<ProjectLabel, Counter>,
    pub done: Family<ProjectLabel, Counter>,
    pub failed: Family<ProjectLabel, Counter>,
    pub retried: Family<ProjectLabel, Counter>,
    pub cancelled: Family<ProjectLabel, Counter>,
    pub duration: Family<ProjectLabel, Histogram, fn() -> Histogram>,
    pub webhook_requests: Family<StatusLabel, Counter>,
    pub webhook_duration: Histogram,
    pub queue: Family<StateLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sync_worker");
        let m = Metrics {
            claimed: Family::default(),
            done: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            cancelled: Family::default(),
            duration: Family::new_with_constructor(job_histogram),
            webhook_requests: Family::default(),
            webhook_duration: webhook_histogram(),
            queue: Family::default(),
            registry: Registry::default(),
        };
        for (name, help, family) in [
            (
                "jobs_claimed",
                "Jobs this worker claimed from the queue",
                &m.claimed,
            ),
            (
                "jobs_done",
                "Jobs that ended done (with or without warnings)",
                &m.done,
            ),
            (
                "jobs_failed",
                "Jobs that failed (error, gave up after their tries, time limit)",
                &m.failed,
            ),
            (
                "jobs_retried",
                "Job tries that raised RetryableJobError and were rescheduled",
                &m.retried,
            ),
            (
                "jobs_cancelled",
                "Jobs cancelled because their project or task was inactive",
                &m.cancelled,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "job_duration_seconds",
            "Time spent in a job's handler",
            m.duration.clone(),
        );
        registry.register(
            "webhook_requests",
            "Webhook requests answered, by HTTP status",
            m.webhook_requests.clone(),
        );
        registry.register(
            "webhook_duration_seconds",
            "Time from a webhook request's arrival to its response",
            m.webhook_duration.clone(),
        );
        registry.register(
            "queue_depth",
            "Jobs in the queue by state (pending, due = pending with eta reached, running), read at scrape time",
            m.queue.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Count a finished job try.
    pub fn job_finished(&self, project: &str, state: TryEnd, secs: f64) {
        let label = ProjectLabel {
            project: project.to_string(),
        };
        let family = match state {
            TryEnd::Done => &self.done,
            TryEnd::Failed => &self.failed,
            TryEnd::Retry => &self.retried,
            TryEnd::Cancelled | TryEnd::Skipped => &self.cancelled,
        };
        family.get_or_create(&label).inc();
        if !matches!(state, TryEnd::Cancelled | TryEnd::Skipped) {
            self.duration.get_or_create(&label).observe(secs);
        }
    }

    pub fn webhook_answered(&self, status: u16, secs: f64) {
        self.webhook_requests
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
        self.webhook_duration.observe(secs);
    }

    /// The text exposition (OpenMetrics, which Prometheus reads).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
