// systemd's Type=notify protocol, read from the notify socket the way systemd does:
// READY=1 once the worker serves the queue, WATCHDOG=1 while its loop turns, and
// STOPPING=1 on SIGTERM; and the shipped unit asks for all of it.
use pg_sync_tests::*;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// Datagrams received on `sock` within `limit`, until `done` says enough.
fn receive(sock: &UnixDatagram, limit: Duration, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < limit && !done(&got) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[tokio::test]
async fn the_worker_says_ready_pings_the_watchdog_and_says_stopping() {
    let db = TestDb::new().await;
    let dir = std::env::var("PG_SYNC_TEST_TMP").unwrap_or_else(|_| "/tmp".into());
    let path = format!("{dir}/notify-{}.sock", std::process::id());
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    // WatchdogSec=1s: pings every half of it. systemd also sets WATCHDOG_PID to the
    // service's pid: the shell sets its own, then becomes the worker (exec keeps it).
    let bin = std::env::var("SYNC_WORKER_BIN").expect("SYNC_WORKER_BIN");
    let w = WorkerProcess::start_program(
        &[
            "sh",
            "-c",
            "export WATCHDOG_PID=$$; exec \"$0\" \"$@\"",
            &bin,
        ],
        &[
            "--database-url",
            &db.url,
            "--webhook-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--executors",
            "1",
        ],
        &[
            ("NOTIFY_SOCKET", path.as_str()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let got = receive(&sock, Duration::from_secs(30), |g| {
        g.iter().any(|m| m.contains("READY=1"))
            && g.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3
    });
    let ready = got.iter().position(|m| m.contains("READY=1"));
    assert!(ready.is_some(), "no READY=1 in {got:?}\n{}", w.output());
    assert!(
        got[ready.unwrap()].contains("STATUS=serving the queue as worker"),
        "{got:?}"
    );
    assert!(
        w.output().contains("connected to the database as worker"),
        "READY=1 came before the worker served the queue"
    );
    let pings = got.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(pings >= 3, "{got:?}");

    w.signal(libc::SIGTERM);
    let got = receive(&sock, Duration::from_secs(10), |g| {
        g.iter().any(|m| m.contains("STOPPING=1"))
    });
    assert!(got.iter().any(|m| m.contains("STOPPING=1")), "{got:?}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn the_shipped_unit_uses_notify_a_watchdog_and_no_restart_on_bad_configuration() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../contrib/sync_worker.service"
    ))
    .expect("contrib/sync_worker.service");
    let setting = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
            .to_string()
    };
    assert_eq!(setting("Type"), "notify");
    assert!(setting("WatchdogSec").ends_with('s'));
    assert_eq!(setting("RestartPreventExitStatus"), "78");
}
