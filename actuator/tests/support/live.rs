//! The live loop in-process, for the tests on real parts: a config for one chain over real
//! providers, the exporter and the actuator run until told to stop.

use std::path::Path;

use actuator::cycle::{ActuatorError, Mode};
use actuator::RunOptions;
use common::config::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// `ethrpc.toml` for chain `dev` (chain id 31337) on backend `rpc`: the exporter probing every
/// 500 ms, the actuator every second over a 3 s signal window, `policy` lines in `[policy]`, and
/// per provider its name, URL and extra lines of its table.
pub fn config_text(
    prometheus_url: &str,
    admin_socket: &Path,
    policy: &str,
    providers: &[(&str, String, &str)],
) -> String {
    let mut text = format!(
        "[exporter]\nprobe_interval = \"500ms\"\nprobe_timeout = \"5s\"\n\
         [actuator]\nprometheus_url = \"{prometheus_url}\"\nhaproxy = \"unix:{}\"\ninterval = \"1s\"\nsignal_window = \"3s\"\n\
         [policy]\n{policy}\n\
         [[chain]]\nname = \"dev\"\nchain_id = 31337\nbackend = \"rpc\"\n",
        admin_socket.display(),
    );
    for (name, url, extra) in providers {
        text.push_str(&format!(
            "[[chain.provider]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n"
        ));
    }
    text
}

/// `text` as a config (it is the tests' own, so it parses).
pub fn parse(text: &str) -> Config {
    Config::parse(Path::new("test.toml"), text, |_| None).unwrap()
}

/// Runs the exporter of `config` on `listener` until the returned sender is used or dropped.
pub fn spawn_exporter(config: &Config, listener: TcpListener) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(exporter::run(config.clone(), listener, async {
        let _ = stopped.await;
    }));
    stop
}

/// A running actuator (writing to HAProxy).
pub struct LiveActuator {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub stop: oneshot::Sender<()>,
    pub handle: JoinHandle<Result<bool, ActuatorError>>,
}

/// Runs the actuator of `config` until [`LiveActuator::stop`] is used, on `listener` (an address
/// Prometheus scrapes, kept across a restart) or, with `None`, on a free port.
pub async fn spawn_actuator(config: Config, listener: Option<TcpListener>) -> LiveActuator {
    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let options = RunOptions {
        mode: Mode::Apply,
        once: false,
    };
    let handle = tokio::spawn(actuator::run(config, options, listener, async {
        let _ = stopped.await;
    }));
    LiveActuator { base, stop, handle }
}
