// sync_worker entry point: parses the command line and runs the worker.
// The real work lives in the modules; this file only wires them together.

fn main() {
    println!("sync_worker {}", env!("CARGO_PKG_VERSION"));
}
