//! End-to-end tests of the `waybill` binary: enrolment, a relay as a child
//! process, a store tablet and a courier's phone as `waybill device` store files,
//! syncing over QUIC on loopback, and the error paths people hit first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const WAYBILL: &str = env!("CARGO_BIN_EXE_waybill");

/// 2 × 1,850,000 IRR: what the courier collects, so the balance ends at zero.
const ORDER_JSON: &str = r#"{"number": "S1-000123", "channel": "web", "store": "S1",
 "customer": {"id": "c-88", "name": "Leila Karimi", "phone": "+98 912 000 0000",
              "address": "12 Vali-Asr St, Tehran"},
 "currency": "IRR", "fulfilment": "delivery",
 "lines": [{"sku": "TEA-500", "name": "Black tea 500 g", "qty": 2, "unit_price": 1850000}]}"#;
const ORDER_TOTAL: &str = "3700000";

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(WAYBILL);
    command
        .args(args)
        // The default log levels are part of what is tested: one `error:` line.
        .env_remove("RUST_LOG")
        .env_remove("WAYBILL_DATA")
        .env_remove("WAYBILL_DB")
        .env_remove("WAYBILL_LISTEN");
    command
}

fn run(args: &[&str]) -> Output {
    command(args).output().unwrap()
}

fn run_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn describe(args: &[&str], output: &Output) -> String {
    format!(
        "waybill {}\nexit: {:?}\nstdout: {}\nstderr: {}",
        args.join(" "),
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Stdout of a command that must succeed, trimmed.
fn ok(output: Output, args: &[&str]) -> String {
    assert!(output.status.success(), "{}", describe(args, &output));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn waybill(args: &[&str]) -> String {
    ok(run(args), args)
}

fn waybill_json(args: &[&str]) -> Value {
    let text = waybill(args);
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{err}: {text}"))
}

/// The stderr of a command that must fail with `code`.
fn fails(args: &[&str], code: i32) -> String {
    fails_with(run(args), args, code)
}

fn fails_with(output: Output, args: &[&str], code: i32) -> String {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{}",
        describe(args, &output)
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A UDP port nothing listens on right now.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `waybill serve` as a child process, killed when dropped (a failing test leaves
/// no relay behind). Its stderr is drained on a thread, kept for diagnostics and
/// forwarded line by line so the test can wait for the relay to listen.
struct Relay {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Relay {
    fn start(data: &Path, addr: &str) -> Self {
        let mut child = Command::new(WAYBILL)
            .args(["serve", "--data", path(data), "--listen", addr])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Self { child, lines, log }
    }

    /// Wait until the relay logs that it listens (or a while; syncs retry anyway).
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.to_lowercase().contains("listening") => return,
                Ok(_) => {}
                Err(_) => break,
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the relay exited early ({status}):\n{}", self.log());
            }
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Send SIGTERM and wait for the relay to exit.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the relay did not stop on SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A device store file initialised with a credential.
struct Device {
    db: PathBuf,
}

impl Device {
    fn init(db: PathBuf, credential: &Path, relay: &str) -> Self {
        let args = [
            "device",
            "--db",
            path(&db),
            "init",
            "--credential",
            path(credential),
            "--relay",
            relay,
        ];
        let line = waybill(&args);
        assert!(line.contains(relay), "{line}");
        Self { db }
    }

    fn args<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["device", "--db", path(&self.db)];
        args.extend_from_slice(rest);
        args
    }

    fn run(&self, rest: &[&str]) -> String {
        waybill(&self.args(rest))
    }

    fn json(&self, rest: &[&str]) -> Value {
        waybill_json(&self.args(rest))
    }

    /// Sync, retrying while the relay may still be starting.
    fn sync(&self, relay: &Relay) -> Value {
        let args = self.args(&["sync", "--timeout", "10", "--json"]);
        let mut failures = Vec::new();
        for _ in 0..5 {
            let output = run(&args);
            if output.status.success() {
                return serde_json::from_slice(&output.stdout).unwrap();
            }
            failures.push(describe(&args, &output));
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "sync kept failing:\n{}\nrelay log:\n{}",
            failures.join("\n"),
            relay.log()
        );
    }
}

fn enroll(data: &Path, out: &Path, role_args: &[&str]) -> Value {
    let mut args = vec!["enroll", "--data", path(data), "--out", path(out), "--json"];
    args.extend_from_slice(role_args);
    waybill_json(&args)
}

#[cfg(unix)]
#[test]
fn an_order_goes_from_store_to_courier_and_back_through_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let addr = format!("127.0.0.1:{}", free_udp_port());

    let store_cred = dir.path().join("tablet.cred");
    let courier_cred = dir.path().join("phone.cred");
    let ops_cred = dir.path().join("ops.cred");
    let issued = enroll(
        &data,
        &store_cred,
        &[
            "--role",
            "store",
            "--store",
            "S1",
            "--device-id",
            "tablet-1",
        ],
    );
    assert_eq!(issued["device_id"], "tablet-1");
    assert_eq!(issued["role"], "store");
    assert!(issued["expires_ms"].as_i64().unwrap() > issued["issued_ms"].as_i64().unwrap());
    enroll(
        &data,
        &courier_cred,
        &[
            "--role",
            "courier",
            "--courier",
            "courier-7",
            "--device-id",
            "phone-7",
        ],
    );
    enroll(
        &data,
        &ops_cred,
        &["--role", "dispatcher", "--device-id", "ops-1"],
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&store_cred).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let mut relay = Relay::start(&data, &addr);
    let tablet = Device::init(dir.path().join("tablet.db"), &store_cred, &addr);
    let phone = Device::init(dir.path().join("phone.db"), &courier_cred, &addr);
    let ops = Device::init(dir.path().join("ops.db"), &ops_cred, &addr);
    relay.wait_listening();

    // The store tablet takes the order in, confirms it and hands it to a courier.
    let create = tablet.args(&["order", "create", "--json", "-"]);
    let order = ok(run_with_stdin(&create, ORDER_JSON), &create);
    assert!(order.starts_with("ord_"), "{order}");
    assert_eq!(tablet.run(&["event", &order, "confirmed"]), "confirmed");
    let delivery = tablet.run(&["assign", &order, "--courier", "courier-7"]);
    assert!(delivery.starts_with("dlv_"), "{delivery}");
    let report = tablet.sync(&relay);
    assert!(report["uploaded"].as_u64().unwrap() >= 3, "{report}");
    assert_eq!(tablet.json(&["status", "--json"])["pending_uploads"], 0);

    // The courier's phone gets the delivery, delivers and collects the cash.
    let report = phone.sync(&relay);
    assert!(report["received"].as_u64().unwrap() >= 1, "{report}");
    let deliveries = phone.json(&["deliveries", "--json", "--courier", "courier-7"]);
    let found = deliveries
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == delivery.as_str())
        .unwrap_or_else(|| panic!("{delivery} not in {deliveries}"));
    assert_eq!(found["status"], "assigned");
    assert_eq!(found["order_id"], order.as_str());
    assert_eq!(phone.run(&["event", &delivery, "picked_up"]), "picked_up");
    assert_eq!(
        phone.run(&[
            "event",
            &delivery,
            "delivered",
            "--note",
            "left with the doorman"
        ]),
        "delivered"
    );
    let paid = phone.json(&[
        "pay",
        &order,
        "--amount",
        ORDER_TOTAL,
        "--currency",
        "IRR",
        "--method",
        "cash",
        "--delivery",
        &delivery,
        "--json",
    ]);
    assert!(
        paid["entry_id"].as_str().unwrap().starts_with("pay_"),
        "{paid}"
    );
    assert_eq!(paid["balance"]["due"], 0, "{paid}");
    phone.sync(&relay);
    let status = phone.json(&["status", "--json"]);
    assert_eq!(status["pending_uploads"], 0, "{status}");
    assert!(status["cursor"]["seq"].as_u64().unwrap() > 0, "{status}");

    // Back on the tablet: delivered, paid in full.
    tablet.sync(&relay);
    let view = tablet.json(&["order", "show", &order, "--json"]);
    assert_eq!(view["status"], "completed", "{view}");
    assert_eq!(view["balance"]["due"], 0, "{view}");
    assert_eq!(view["balance"]["paid"], 3_700_000, "{view}");
    assert_eq!(view["deliveries"][0], delivery.as_str(), "{view}");
    let shown = tablet.json(&["delivery", "show", &delivery, "--json"]);
    assert_eq!(shown["status"], "delivered", "{shown}");

    // Dispatch sees everything.
    ops.sync(&relay);
    let completed = ops.json(&["orders", "--json", "--status", "completed"]);
    assert_eq!(completed[0]["id"], order.as_str(), "{completed}");
    assert_eq!(completed[0]["balance_due"], 0, "{completed}");

    let export = dir.path().join("order.automerge");
    tablet.run(&["export", &order, "--out", path(&export)]);
    assert!(std::fs::metadata(&export).unwrap().len() > 0);
    assert_eq!(
        tablet.json(&["refused", "--json"]),
        Value::Array(Vec::new())
    );

    // A revoked phone is refused at its next connection, with a clear message.
    let revoked = waybill(&["revoke", "--data", path(&data), "phone-7"]);
    assert!(revoked.starts_with("revoked phone-7"), "{revoked}");
    let stderr = fails(&phone.args(&["sync", "--timeout", "10"]), 1);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("revoked"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let status = relay.terminate();
    assert!(status.success(), "{status}\n{}", relay.log());
}

#[test]
fn a_bad_order_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let cred = dir.path().join("tablet.cred");
    enroll(&data, &cred, &["--role", "store", "--store", "S1"]);
    let tablet = Device::init(dir.path().join("tablet.db"), &cred, "127.0.0.1:4433");

    let create = tablet.args(&["order", "create", "--json", "-"]);
    let stderr = fails_with(run_with_stdin(&create, "{\"number\": 7"), &create, 1);
    assert!(
        stderr.starts_with("error: stdin is not a valid order"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let unknown_field = ORDER_JSON.replacen("\"number\"", "\"numbr\"", 1);
    let stderr = fails_with(run_with_stdin(&create, &unknown_field), &create, 1);
    assert!(stderr.contains("numbr"), "{stderr}");

    // Valid JSON the model refuses: a typed error, nothing stored.
    let no_lines = ORDER_JSON.replace(
        r#"[{"sku": "TEA-500", "name": "Black tea 500 g", "qty": 2, "unit_price": 1850000}]"#,
        "[]",
    );
    let stderr = fails_with(run_with_stdin(&create, &no_lines), &create, 1);
    assert!(stderr.contains("at least one line"), "{stderr}");
    let missing = dir.path().join("missing.json");
    let stderr = fails(
        &tablet.args(&["order", "create", "--json", path(&missing)]),
        1,
    );
    assert!(stderr.contains("missing.json"), "{stderr}");
    assert_eq!(tablet.json(&["orders", "--json"]), Value::Array(Vec::new()));
}

#[test]
fn device_commands_need_init_first() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("phone.db");
    let stderr = fails(&["device", "--db", path(&db), "orders", "--json"], 1);
    assert!(stderr.contains("init --credential FILE` first"), "{stderr}");
    assert!(
        !db.exists(),
        "a device command before init must create nothing"
    );

    let garbage = dir.path().join("garbage.cred");
    std::fs::write(&garbage, "{\"not\": \"a credential\"}").unwrap();
    let stderr = fails(
        &[
            "device",
            "--db",
            path(&db),
            "init",
            "--credential",
            path(&garbage),
        ],
        1,
    );
    assert!(stderr.contains("malformed"), "{stderr}");
}

#[test]
fn a_store_file_stays_with_its_device() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let first = dir.path().join("first.cred");
    let second = dir.path().join("second.cred");
    enroll(
        &data,
        &first,
        &["--role", "store", "--store", "S1", "--device-id", "t-1"],
    );
    enroll(
        &data,
        &second,
        &["--role", "store", "--store", "S1", "--device-id", "t-2"],
    );
    let db = dir.path().join("tablet.db");
    Device::init(db.clone(), &first, "127.0.0.1:4433");
    let stderr = fails(
        &[
            "device",
            "--db",
            path(&db),
            "init",
            "--credential",
            path(&second),
        ],
        1,
    );
    assert!(stderr.contains("belongs to device t-1"), "{stderr}");
}

#[test]
fn enrol_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let out = dir.path().join("c.cred");
    let base = ["enroll", "--data", path(&data), "--out", path(&out)];

    let mut args = base.to_vec();
    args.extend(["--role", "courier"]);
    let stderr = fails(&args, 1);
    assert!(stderr.contains("pass --courier"), "{stderr}");
    assert!(!out.exists());

    let mut args = base.to_vec();
    args.extend(["--role", "pilot"]);
    fails(&args, 2);
    let mut args = base.to_vec();
    args.extend([
        "--role",
        "store",
        "--store",
        "S1",
        "--relay-addr",
        "nowhere",
    ]);
    let stderr = fails(&args, 1);
    assert!(stderr.contains("host:port"), "{stderr}");

    let line = waybill(&[
        "enroll",
        "--data",
        path(&data),
        "--out",
        path(&out),
        "--role",
        "courier",
        "--courier",
        "c-1",
    ]);
    assert!(
        line.starts_with("dev_") && line.contains(" courier expires "),
        "{line}"
    );
}

#[test]
fn operator_commands_on_a_relay_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let stderr = fails(&["quarantine", "list", "--data", path(&data)], 1);
    assert!(stderr.contains("holds no relay"), "{stderr}");
    assert!(!data.exists(), "a typo in --data must not create a relay");

    enroll(&data, &dir.path().join("a.cred"), &["--role", "dispatcher"]);
    assert_eq!(
        waybill_json(&["quarantine", "list", "--data", path(&data), "--json"]),
        Value::Array(Vec::new())
    );
    let stderr = fails(&["quarantine", "show", "1", "--data", path(&data)], 1);
    assert!(
        stderr.contains("no quarantined change with id 1"),
        "{stderr}"
    );
    let line = waybill(&["revoke", "--data", path(&data), "dev_0123456789ab"]);
    assert!(line.starts_with("revoked dev_0123456789ab"), "{line}");
}

#[test]
fn usage_errors_exit_with_2() {
    fails(&["serve", "--cert", "cert.pem"], 2);
    fails(&["device", "--db", "x.db", "pay", "ord_1"], 2);
    fails(&["device", "--db", "x.db", "sync", "--timeout", "0"], 2);
    fails(&["launch"], 2);
}

#[test]
fn revocations_and_the_quarantine_work_on_a_postgres_deployment() {
    let Some(pg) = waybill_server::testing::PgSchema::for_test("cli_postgres") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    enroll(
        &data,
        &dir.path().join("t.cred"),
        &["--role", "store", "--store", "S1"],
    );
    let said = waybill(&[
        "revoke",
        "--data",
        path(&data),
        "--postgres",
        &pg.url,
        "tablet-lost",
    ]);
    assert!(said.contains("revoked tablet-lost"), "{said}");
    let list = waybill_json(&[
        "quarantine",
        "list",
        "--data",
        path(&data),
        "--postgres",
        &pg.url,
        "--json",
    ]);
    assert_eq!(list, serde_json::json!([]));
    let revoked: bool = pg
        .client()
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM revoked WHERE device_id = 'tablet-lost')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(revoked, "the revocation is in the shared database");
    assert!(
        !data.join("relay.db").exists(),
        "nothing was written to a local database"
    );
}
