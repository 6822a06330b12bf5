// The job queue as the worker uses it: the doorbell cleared before claims, the worker's
// identity and liveness, the rescuer of dead workers' tries, and the cron scheduler.
pub mod doorbell;
pub mod registry;
pub mod rescuer;
pub mod scheduler;
