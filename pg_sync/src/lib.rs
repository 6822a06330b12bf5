// pg_sync extension entry point: loads the SQL sources and declares the modules.
// Public functions live in the modules named for what they hold.
use pgrx::prelude::*;

mod error;
mod links;
mod plans;
mod schedule;
mod session;
mod tables;
mod triggers;

::pgrx::pg_module_magic!();

// The data model comes first: every Rust function below refers to its types.
extension_sql_file!("../../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../../sql/links.sql", name = "links", requires = ["schema"]);
extension_sql_file!("../../sql/jobs.sql", name = "jobs", requires = ["schema"]);
extension_sql_file!(
    "../../sql/triggers.sql",
    name = "triggers",
    requires = ["schema"]
);
extension_sql_file!(
    "../../sql/webhooks.sql",
    name = "webhooks",
    requires = ["jobs"]
);
extension_sql_file!(
    "../../sql/projects.sql",
    name = "projects",
    requires = ["schema", "jobs", "triggers"]
);
extension_sql_file!(
    "../../sql/executor.sql",
    name = "executor",
    requires = ["jobs", "webhooks"]
);
// Grants name every function, so they run last.
extension_sql_file!("../../sql/roles.sql", name = "roles", finalize);
