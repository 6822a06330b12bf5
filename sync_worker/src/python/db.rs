// Database access of task code: the executor's connection, inside the batch transaction.
// (Interim version from the worker branch; the python helper owns and replaces it.)
use tokio_postgres::Client;

pub struct JobDb<'a> {
    pub(crate) client: &'a Client,
    pub(crate) rt: &'a tokio::runtime::Runtime,
}

impl<'a> JobDb<'a> {
    pub fn new(client: &'a Client, rt: &'a tokio::runtime::Runtime) -> Self {
        JobDb { client, rt }
    }

    pub(crate) fn batch(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.rt.block_on(self.client.batch_execute(sql))
    }
}
