// The job queue as the worker uses it: claiming (sync.claim_jobs), the worker's identity
// and liveness, the rescuer of dead workers' jobs, and the scheduler that enqueues crons.
pub mod claim;
pub mod registry;
pub mod rescuer;
pub mod scheduler;
