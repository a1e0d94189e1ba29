//! Real Prometheus and Alertmanager processes (Debian's packages) on free ports in temp dirs.
//!
//! A test that needs one calls [`Daemon::start`]; when the binary is missing it gets `None`
//! and skips with a message, except in CI (`CI=true`), where a missing binary is a failure:
//! `.ci/run` installs both packages.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// How long a daemon may take to answer its readiness endpoint.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// Finds `name` on PATH. Missing: panics in CI, otherwise prints why the test is skipped.
pub(crate) fn binary(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let msg =
            format!("`{name}` is not installed (Debian package `{package}`; .ci/run installs it)");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}: required in CI");
        }
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

/// A running daemon; killed (and its temp dir removed) when dropped.
pub(crate) struct Daemon {
    child: Child,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Its working folder (config, storage, log).
    pub(crate) dir: tempfile::TempDir,
    name: &'static str,
}

impl Daemon {
    /// Writes `config` to `<dir>/config.yml`, runs `binary` with `args(dir, addr)` and waits
    /// until `GET /-/ready` answers 200.
    pub(crate) async fn start(
        name: &'static str,
        binary: PathBuf,
        port: u16,
        config: &str,
        args: impl FnOnce(&std::path::Path, SocketAddr) -> Vec<String>,
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let child = Command::new(&binary)
            .args(args(dir.path(), addr))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut daemon = Daemon {
            child,
            addr,
            dir,
            name,
        };
        daemon.await_ready().await;
        daemon
    }

    async fn await_ready(&mut self) {
        let client = reqwest::Client::new();
        let url = format!("http://{}/-/ready", self.addr);
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}):\n{}", self.name, self.log());
            }
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                started.elapsed() < START_DEADLINE,
                "{} not ready at {url} after {START_DEADLINE:?}:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The daemon's output so far, for failure messages.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// `http://<addr><path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Alertmanager with a config that routes everything to a receiver that does nothing.
pub(crate) async fn alertmanager(port: u16) -> Option<Daemon> {
    let bin = binary("prometheus-alertmanager", "prometheus-alertmanager")?;
    let config =
        "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n";
    Some(
        Daemon::start("alertmanager", bin, port, config, |dir, addr| {
            vec![
                format!("--config.file={}", dir.join("config.yml").display()),
                format!("--storage.path={}", dir.join("data").display()),
                format!("--web.listen-address={addr}"),
                // An empty address turns clustering off (no gossip port to collide on).
                "--cluster.listen-address=".into(),
            ]
        })
        .await,
    )
}

/// Prometheus scraping `target` (host:port, path /metrics) every second, with `rules` (a
/// rule file's text, may be empty).
pub(crate) async fn prometheus(target: SocketAddr, rules: Option<&str>) -> Option<Daemon> {
    let bin = binary("prometheus", "prometheus")?;
    let mut config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: kpiflow\n    static_configs:\n      - targets: ['{target}']\n"
    );
    if rules.is_some() {
        config.push_str("rule_files:\n  - rules.yml\n");
    }
    let rules = rules.map(str::to_string);
    Some(
        Daemon::start("prometheus", bin, free_port(), &config, move |dir, addr| {
            if let Some(r) = rules {
                std::fs::write(dir.join("rules.yml"), r).unwrap();
            }
            vec![
                format!("--config.file={}", dir.join("config.yml").display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                format!("--web.listen-address={addr}"),
            ]
        })
        .await,
    )
}

/// Polls `probe` every 100 ms until it yields a value, or panics with `what` and `context()`
/// after `deadline`.
pub(crate) async fn await_some<T, F, Fut>(
    what: &str,
    deadline: Duration,
    mut probe: F,
    context: impl Fn() -> String,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            started.elapsed() < deadline,
            "{what}: not seen within {deadline:?}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
