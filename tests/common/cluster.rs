//! A cluster for end-to-end runs where no API server can be installed: an in-memory API
//! server (`imgate_fake_api`) on loopback, `imgate operator run` against it, and dataplanes
//! that reach it through a kubeconfig as a pod reaches its API server.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imgate_fake_api::FakeApi;
use serde_json::Value;

use super::Killed;

/// The namespace the operator gives tenant `tenant`.
pub fn namespace(tenant: &str) -> String {
    format!("imgate-{tenant}")
}

/// The small firm of the examples, named `tenant`.
pub fn example_tenant(tenant: &str) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/small-firm/tenant.yaml"
    );
    let text = std::fs::read_to_string(path).expect("the example Tenant");
    let mut object: Value = serde_saphyr::from_str(&text).expect("a Tenant");
    object["metadata"]["name"] = tenant.into();
    object
}

/// The example small firm's one IMPolicy, naming tenant `tenant`.
pub fn example_policy(tenant: &str) -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/small-firm/policy.yaml"
    ))
    .expect("the example policy");
    let mut policy: Value = serde_saphyr::from_str(&text).expect("an IMPolicy");
    policy["spec"]["tenantRef"] = tenant.into();
    policy
}

/// The in-memory API server serving the example Tenant as `tenant` and its IMPolicy `policy`,
/// and `imgate operator run` against it, which has delivered the first policy set.
pub struct Cluster {
    /// The API server.
    pub api: FakeApi,
    /// Its URL.
    pub url: String,
    /// A kubeconfig for it, in the tenant's namespace, as a dataplane pod sees it.
    pub kubeconfig: PathBuf,
    /// The operator's log.
    pub operator_log: PathBuf,
    /// The revision of the first policy set.
    pub revision: String,
    _operator: Killed,
}

impl Cluster {
    /// Starts it with `api`, its files in `dir`.
    pub async fn start(dir: &Path, api: FakeApi, tenant: &str, policy: Value) -> Self {
        api.insert("tenants", example_tenant(tenant));
        api.insert("impolicies", policy);
        let url = api.serve().await.expect("a port");
        let kubeconfig = kubeconfig(dir, &url, &namespace(tenant));
        let operator_log = dir.join("operator.log");
        let running = operator(&kubeconfig, &operator_log);
        let revision = policy_revision(&api, tenant, None, &operator_log);
        Self {
            api,
            url,
            kubeconfig,
            operator_log,
            revision,
            _operator: running,
        }
    }

    /// The operator's process id.
    pub fn operator_pid(&self) -> u32 {
        self._operator.0.id()
    }

    /// Waits up to 60 s for the operator to exit (after a signal): its exit status.
    pub fn operator_exit(&mut self) -> std::process::ExitStatus {
        let log = self.operator_log.clone();
        wait_until("the operator's exit", &log, || {
            self._operator.0.try_wait().expect("the operator's state")
        })
    }

    /// A client of the API server, for changes a user would make with kubectl; needs a
    /// runtime entered.
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(kube::Config::new(self.url.parse().expect("a URL")))
            .expect("a client")
    }
}

/// Writes a kubeconfig for the API server at `url` whose context is in `namespace`, as a
/// tenant's dataplane pod sees its API server; returns its path.
pub fn kubeconfig(dir: &Path, url: &str, namespace: &str) -> PathBuf {
    let path = dir.join(format!("kubeconfig-{namespace}"));
    std::fs::write(&path, FakeApi::kubeconfig(url, namespace)).expect("kubeconfig");
    path
}

/// Starts `imgate operator run` against the API server of `kubeconfig`, its log in `log`.
pub fn operator(kubeconfig: &Path, log: &Path) -> Killed {
    operator_with_env(kubeconfig, log, &[])
}

/// [`operator`] with the environment variables `env` set.
pub fn operator_with_env(kubeconfig: &Path, log: &Path, env: &[(&str, &str)]) -> Killed {
    let file = std::fs::File::create(log).expect("log file");
    Killed(
        Command::new(env!("CARGO_BIN_EXE_imgate"))
            .args(["operator", "run", "--metrics", "127.0.0.1:0"])
            .args(["--api-server-cidr", "127.0.0.1/32"])
            .args(["--lease-namespace", "imgate-system"])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("the operator starts"),
    )
}

/// The object `name` of `plural` in `namespace`, if `api` holds it.
pub fn object(api: &FakeApi, plural: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
    api.all(plural)
        .into_iter()
        .find(|o| o["metadata"]["name"] == name && o["metadata"]["namespace"].as_str() == namespace)
}

/// Waits until `ready` holds of what `api` has, for up to 60 s; `what` says what was awaited
/// and `log` where to look should it not come. The operator's slowest legitimate path, a
/// report Lease change that only its periodic sweep picks up, takes up to 30 s
/// (`report::gather::SWEEP`); a loaded machine needs more.
pub fn wait_until<T>(what: &str, log: &Path, ready: impl FnMut() -> Option<T>) -> T {
    wait_until_showing(
        what,
        || {
            format!(
                "the log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        },
        ready,
    )
}

/// [`wait_until`], showing what `show` gives should it not come.
pub fn wait_until_showing<T>(
    what: &str,
    show: impl Fn() -> String,
    mut ready: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = ready() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 60 s; {}",
            show()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The revision of the policy ConfigMap the operator wrote for `tenant`, once there is one
/// other than `not`.
pub fn policy_revision(api: &FakeApi, tenant: &str, not: Option<&str>, log: &Path) -> String {
    let namespace = namespace(tenant);
    wait_until("a new policy ConfigMap", log, || {
        let map = object(api, "configmaps", Some(&namespace), "policy")?;
        let revision = map["metadata"]["annotations"]["imgate.io/policy-revision"].as_str()?;
        (Some(revision) != not).then(|| revision.to_owned())
    })
}
