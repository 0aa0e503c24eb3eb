//! The Kubernetes manifests played for real on this host: `k8s/overlays/podman` rendered by
//! `kubectl kustomize` and run by `podman kube play` from the images `scripts/images` builds,
//! on a slice of the real infrastructure of its own (a fresh MariaDB database, a MongoDB-wire
//! server, queues behind a unique prefix, an SMTP capture).
//!
//! Every container keeps the manifests' own spec; around them this module does what a kubelet
//! would: it runs each container's probes as the manifest declares them (HTTP GET, gRPC
//! health) against the ports it names, starts a killed container again, and reads back what
//! the runtime enforces (user, read-only root, capabilities, memory limit, peak memory).
//!
//! Each pod has a network namespace of its own (slirp4netns, where the host's loopback is
//! [`HOST_FROM_A_POD`]), and podman publishes every containerPort on the host, so the ports are
//! the manifests' fixed ones: one deployment per host at a time (the cli tests that use it run
//! one at a time, see `.config/nextest.toml`).

use crate::{MongoServer, SmtpCapture, TempDir, TestBroker, TestMysql, temp_dir};
use anyhow::{Context, bail};
use clients::StorageClient;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// The tag `scripts/images` gives the five images (the overlay's `newTag`).
pub const IMAGE_TAG: &str = "0.1.0";
/// The host's loopback as a pod sees it: slirp4netns's address for the host, reachable with
/// `allow_host_loopback` (the overlay's hostAliases send the Service names here too).
pub const HOST_FROM_A_POD: &str = "10.0.2.2";
/// How each pod's network is made (`podman kube play --network`).
const POD_NETWORK: &str = "slirp4netns:allow_host_loopback=true";
/// The password of every account a deployment test makes.
pub const PASSWORD: &str = "correct horse battery staple";

/// A probe as the manifest declares it, with named ports resolved to numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `httpGet`: any status from 200 to 399 passes, as for a kubelet.
    HttpGet {
        /// The container port.
        port: u16,
        /// The request path.
        path: String,
    },
    /// `grpc`: the standard health service answers SERVING for the server as a whole.
    Grpc {
        /// The container port.
        port: u16,
    },
}

/// One container of a played Deployment, as the rendered manifest describes it.
#[derive(Debug, Clone)]
pub struct Container {
    /// The Deployment's name (`gateway`, `auth`, ...).
    pub deployment: String,
    /// The container's name in the pod template.
    pub name: String,
    /// The image it runs.
    pub image: String,
    /// `resources.limits.memory`, in bytes.
    pub memory_limit: u64,
    /// `startupProbe`, `livenessProbe`, `readinessProbe`.
    pub startup: Option<Probe>,
    /// See [`Container::startup`].
    pub liveness: Option<Probe>,
    /// See [`Container::startup`].
    pub readiness: Option<Probe>,
}

impl Container {
    /// The name podman 4.3 gives the container: `<deployment>-pod-0-<container>` (one pod per
    /// Deployment, whatever its replicas).
    pub fn podman_name(&self) -> String {
        format!("{}-{}", self.pod_name(), self.name)
    }

    /// The name podman 4.3 gives the container's pod: `<deployment>-pod-0`.
    pub fn pod_name(&self) -> String {
        format!("{}-pod-0", self.deployment)
    }

    /// The container port of its readiness probe, where the service answers.
    fn port(&self) -> Option<u16> {
        match self.readiness.as_ref()? {
            Probe::HttpGet { port, .. } | Probe::Grpc { port } => Some(*port),
        }
    }
}

/// What the container runtime enforces for a running container, read back from podman.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforced {
    /// The user and group ids the process runs as (`uid:gid`, as the kernel reports them).
    pub user: String,
    /// Whether the root filesystem is read-only.
    pub read_only_root: bool,
    /// The effective capabilities (empty: none).
    pub effective_capabilities: Vec<String>,
    /// The cgroup memory limit, in bytes.
    pub memory_limit: u64,
    /// The names (never the values) of the process's environment variables.
    pub environment: Vec<String>,
}

/// The played manifests and the infrastructure under them; the pods are removed on drop (the
/// Secrets' files live in the scratch directory, removed with it).
#[derive(Debug)]
pub struct Deployment {
    /// The gateway's URL.
    pub gateway: String,
    /// An HTTP client with a 30 s deadline per request.
    pub http: reqwest::Client,
    /// Where the notifier's mail arrives.
    pub smtp: SmtpCapture,
    /// The MongoDB-wire server storage uses.
    pub mongo: MongoServer,
    /// RabbitMQ, behind this deployment's queue prefix.
    pub broker: TestBroker,
    /// Every container of every played Deployment.
    pub containers: Vec<Container>,
    /// How long each container took from its start until its readiness probe first passed.
    pub start_to_ready: Vec<(String, Duration)>,
    render: PathBuf,
    _scratch: TempDir,
    _mysql: TestMysql,
}

impl Deployment {
    /// Renders the podman overlay with this deployment's datastores, plays it, and waits until
    /// every container passes its probes.
    pub async fn play() -> anyhow::Result<Self> {
        let mysql = TestMysql::create().await?;
        let mongo = MongoServer::start().await?;
        let broker = TestBroker::create().await?;
        let smtp = SmtpCapture::start()?;
        let queues = broker.queues();

        let scratch = temp_dir();
        let k8s = scratch.path().join("k8s");
        copy_tree(&repository_root().join("k8s"), &k8s)?;
        put_templates_in_place(&k8s)?;
        let overlay = k8s.join("overlays/podman");
        let write = |path: &str, body: String| {
            std::fs::write(overlay.join(path), body).with_context(|| format!("writing {path}"))
        };
        // The servers listen on the host's loopback; a pod reaches it as HOST_FROM_A_POD.
        let from_a_pod = |url: String| url.replacen("127.0.0.1", HOST_FROM_A_POD, 1);
        write(
            "secrets/auth.env",
            format!(
                "DATABASE_URL={}\nJWT_SECRET=podman-test-signing-key-of-at-least-32-bytes\n",
                from_a_pod(mysql.url())
            ),
        )?;
        write(
            "secrets/storage.env",
            format!("MONGODB_URI={}\n", from_a_pod(mongo.uri())),
        )?;
        write(
            "secrets/amqp.env",
            format!("AMQP_URL={}\n", from_a_pod(broker.url().to_owned())),
        )?;
        write(
            "secrets/smtp.env",
            format!("SMTP_URL={}\n", from_a_pod(smtp.url())),
        )?;
        let names: String = queues
            .env_vars()
            .iter()
            .map(|(name, value)| format!("{name}={value}\n"))
            .collect();
        write("run.env", names)?;

        let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let rendered = run_with_input(
            std::process::Command::new(&kubectl)
                .arg("kustomize")
                .arg(&overlay),
            "",
        )
        .with_context(|| format!("{kubectl} kustomize k8s/overlays/podman"))?;
        let documents = yaml_documents(&rendered)?;
        let containers = containers_of(&documents)?;
        // podman 4.3 cannot play a `secret` volume (it dereferences a secrets manager it never
        // made: SIGSEGV in kube.VolumeFromSecret, seen here), and its envFrom from a Secret fails
        // too (podman issue 17071). So the harness does what a kubelet does for a Secret volume
        // itself: each rendered Secret's keys become files in a directory of this run (mode
        // 0444, as the pod's fsGroup would make them readable on a cluster), and each `secret`
        // volume becomes a `hostPath` one on that directory, mounted read-only as the manifest
        // says. The Secrets themselves are not played.
        let secret_dirs = scratch.path().join("secrets");
        let (secret_documents, mut others): (Vec<Value>, Vec<Value>) =
            documents.into_iter().partition(|d| d["kind"] == "Secret");
        for secret in &secret_documents {
            write_secret_files(secret, &secret_dirs)?;
        }
        for document in others.iter_mut().filter(|d| d["kind"] == "Deployment") {
            secret_volumes_to_host_paths(document, &secret_dirs)?;
        }
        let render = scratch.path().join("podman.yaml");
        let mut stream = String::new();
        for document in &others {
            stream.push_str(&serde_json::to_string(document)?);
            stream.push_str("\n---\n");
        }
        std::fs::write(&render, stream)?;
        anyhow::ensure!(
            containers.len() == 5,
            "expected the five services, got {containers:?}"
        );

        let mut deployment = Self {
            gateway: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            smtp,
            mongo,
            broker,
            containers,
            start_to_ready: Vec::new(),
            render,
            _scratch: scratch,
            _mysql: mysql,
        };
        let gateway_port = deployment
            .container("gateway")
            .port()
            .context("the gateway has a readiness probe")?;
        deployment.gateway = format!("http://127.0.0.1:{gateway_port}");
        // What an earlier run that died before tearing down left has the same names.
        deployment.tear_down();
        podman(&[
            "kube",
            "play",
            "--network",
            POD_NETWORK,
            deployment.render.to_str().context("a UTF-8 path")?,
        ])?;
        for container in deployment.containers.clone() {
            let took = deployment.wait_until_ready(&container).await?;
            deployment
                .start_to_ready
                .push((container.deployment.clone(), took));
        }
        Ok(deployment)
    }

    /// The container of Deployment `deployment`.
    pub fn container(&self, deployment: &str) -> &Container {
        self.containers
            .iter()
            .find(|c| c.deployment == deployment)
            .unwrap_or_else(|| panic!("no Deployment {deployment} was played"))
    }

    /// The gateway's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }

    /// A client of the storage service on its container port.
    pub fn storage(&self) -> StorageClient {
        let port = self.container("storage").port().expect("a gRPC port");
        StorageClient::connect_lazy(&format!("http://127.0.0.1:{port}"), None).expect("a valid URL")
    }

    /// Runs `probe` once, as a kubelet does (2 s deadline).
    pub async fn probe(&self, probe: &Probe) -> anyhow::Result<()> {
        match probe {
            Probe::HttpGet { port, path } => {
                let status = self
                    .http
                    .get(format!("http://127.0.0.1:{port}{path}"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await?
                    .status();
                anyhow::ensure!(
                    (200..400).contains(&status.as_u16()),
                    "GET :{port}{path} answered {status}"
                );
            }
            Probe::Grpc { port } => {
                let channel =
                    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
                        .connect_timeout(Duration::from_secs(2))
                        .timeout(Duration::from_secs(2))
                        .connect()
                        .await?;
                let status = crate::grpc::health_status(channel, "").await?;
                anyhow::ensure!(
                    status == tonic_health::pb::health_check_response::ServingStatus::Serving,
                    "gRPC health on :{port} is {status:?}"
                );
            }
        }
        Ok(())
    }

    /// Waits until `container`'s startup probe passes, then its liveness and readiness probes;
    /// returns the time from the container's start (as podman recorded it) to ready. Probes
    /// run every 100 ms rather than every `periodSeconds`, so the figure is the service's own
    /// start-up, without the kubelet's polling delay on top.
    pub async fn wait_until_ready(&self, container: &Container) -> anyhow::Result<Duration> {
        self.ready_after(container, || Ok(())).await
    }

    /// [`Self::wait_until_ready`], calling `before_each_try` before each round of probes; an
    /// error from it counts as a failed round.
    async fn ready_after(
        &self,
        container: &Container,
        mut before_each_try: impl FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let attempt = match before_each_try() {
                Ok(()) => self.passes_its_probes(container).await,
                Err(error) => Err(error),
            };
            match attempt {
                Ok(()) => break,
                Err(error) if Instant::now() >= deadline => bail!(
                    "{} never became ready: {error:#}\n{}\n{}",
                    container.podman_name(),
                    self.state(container),
                    self.logs(container)
                ),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let started_ns: u128 = self
            .inspect(container, "{{.State.StartedAt.UnixNano}}")?
            .parse()
            .context("StartedAt.UnixNano")?;
        let now_ns = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        Ok(Duration::from_nanos(
            now_ns.saturating_sub(started_ns).try_into()?,
        ))
    }

    /// Runs `container`'s startup, liveness and readiness probes once, in that order, up to
    /// the first that fails.
    async fn passes_its_probes(&self, container: &Container) -> anyhow::Result<()> {
        let probes = [
            &container.startup,
            &container.liveness,
            &container.readiness,
        ];
        for probe in probes.into_iter().flatten() {
            self.probe(probe)
                .await
                .with_context(|| format!("{probe:?}"))?;
        }
        Ok(())
    }

    /// What podman records of `container` and its pod, for a failure's message.
    fn state(&self, container: &Container) -> String {
        let container_state = self
            .inspect(
                container,
                "container {{.State.Status}}, exit code {{.State.ExitCode}}, \
                 restarts {{.RestartCount}}, error {{.State.Error}}",
            )
            .unwrap_or_else(|error| format!("{error:#}"));
        let pod_state = podman(&[
            "pod",
            "inspect",
            "--format",
            "{{.State}}",
            &container.pod_name(),
        ])
        .map(|state| state.trim().to_owned())
        .unwrap_or_else(|error| format!("{error:#}"));
        format!("{container_state}; pod {pod_state}")
    }

    /// `podman inspect --format FORMAT` of `container`.
    pub fn inspect(&self, container: &Container, format: &str) -> anyhow::Result<String> {
        Ok(
            podman(&["inspect", "--format", format, &container.podman_name()])?
                .trim()
                .to_owned(),
        )
    }

    /// What the runtime enforces for `container` right now.
    pub fn enforced(&self, container: &Container) -> anyhow::Result<Enforced> {
        let pid = self.inspect(container, "{{.State.Pid}}")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("the status of {}'s process", container.podman_name()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(str::trim)
                .with_context(|| format!("{name} in /proc/{pid}/status"))
        };
        // The real id, the first of "real effective saved filesystem".
        let first = |ids: &str| ids.split_whitespace().next().unwrap_or_default().to_owned();
        let user = format!("{}:{}", first(field("Uid:")?), first(field("Gid:")?));
        let cap_eff = field("CapEff:")?;
        let effective_capabilities = if u64::from_str_radix(cap_eff, 16)? == 0 {
            Vec::new()
        } else {
            vec![cap_eff.to_owned()]
        };
        let environ = std::fs::read(format!("/proc/{pid}/environ"))
            .with_context(|| format!("the environment of {}'s process", container.podman_name()))?;
        let environment = environ
            .split(|byte| *byte == 0)
            .filter_map(|entry| entry.split(|byte| *byte == b'=').next())
            .filter(|name| !name.is_empty())
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .collect();
        Ok(Enforced {
            environment,
            user,
            read_only_root: self.inspect(container, "{{.HostConfig.ReadonlyRootfs}}")? == "true",
            effective_capabilities,
            memory_limit: self.inspect(container, "{{.HostConfig.Memory}}")?.parse()?,
        })
    }

    /// The most memory `container`'s cgroup has used since it (last) started, in bytes.
    pub fn peak_memory(&self, container: &Container) -> anyhow::Result<u64> {
        let cgroup = self.inspect(container, "{{.State.CgroupPath}}")?;
        let candidates = [
            format!("/sys/fs/cgroup/memory{cgroup}/memory.max_usage_in_bytes"),
            format!("/sys/fs/cgroup{cgroup}/memory.peak"),
        ];
        for path in &candidates {
            if let Ok(text) = std::fs::read_to_string(path) {
                return Ok(text.trim().parse()?);
            }
        }
        bail!(
            "no peak memory for {} in {candidates:?}",
            container.podman_name()
        )
    }

    /// Whether the kernel killed `container` for going over its memory limit.
    pub fn oom_killed(&self, container: &Container) -> anyhow::Result<bool> {
        Ok(self.inspect(container, "{{.State.OOMKilled}}")? == "true")
    }

    /// Everything `container` logged (across restarts).
    pub fn logs(&self, container: &Container) -> String {
        // `podman logs` replays the container's stderr on its own stderr, and the services log
        // there.
        podman_output(&["logs", &container.podman_name()])
            .map(|printed| printed.stdout + &printed.stderr)
            .unwrap_or_else(|error| format!("{error:#}"))
    }

    /// SIGKILL to `container`'s process, like an OOM kill or a node lost; returns once podman
    /// sees it stopped.
    pub async fn kill(&self, container: &Container) -> anyhow::Result<()> {
        podman(&["kill", "--signal", "KILL", &container.podman_name()])?;
        Ok(())
    }

    /// Starts `container` again, as a kubelet restarts a pod's failed container (podman does it
    /// itself when its restart policy beats us to it), and waits until it is ready.
    pub async fn restart(&self, container: &Container) -> anyhow::Result<Duration> {
        // The pod, not the container: podman 4.3 plays each pod with the exit policy "stop", so
        // when its only container dies the pod's infra container (its network namespace) stops
        // a moment later, and `podman start` of the container alone then fails ("cannot get
        // namespace path unless container … is running"; seen in CI). A kubelet keeps the
        // sandbox; `pod start` brings back the infra and the container.
        //
        // Checked before every round of probes, not once: that stop comes from the dead
        // container's clean-up, and when it comes after our `pod start` it stops the pod again,
        // the container just started with it (seen here: `kill` then at once `pod start` left
        // the container stopped, in 4 tries of 4; in CI the converter then never answered its
        // probe).
        self.ready_after(container, || {
            if self.inspect(container, "{{.State.Running}}")? != "true" {
                podman(&["pod", "start", &container.pod_name()])?;
            }
            Ok(())
        })
        .await
    }

    /// The table of each container: its image's size, start to ready, peak memory against its
    /// limit.
    pub fn report(&self) -> anyhow::Result<String> {
        let mut table = String::from(
            "| container | image size (MB) | start to ready (s) | peak memory (MiB) | memory limit (MiB) |\n\
             |-----------|----------------:|-------------------:|------------------:|-------------------:|\n",
        );
        for container in &self.containers {
            let size: f64 = podman(&[
                "image",
                "inspect",
                "--format",
                "{{.Size}}",
                &container.image,
            ])?
            .trim()
            .parse()?;
            let ready = self
                .start_to_ready
                .iter()
                .find(|(name, _)| *name == container.deployment)
                .map(|(_, took)| format!("{:.2}", took.as_secs_f64()))
                .unwrap_or_default();
            table.push_str(&format!(
                "| {} | {:.1} | {ready} | {:.1} | {} |\n",
                container.deployment,
                size / 1e6,
                self.peak_memory(container)? as f64 / 1048576.0,
                container.memory_limit / 1048576
            ));
        }
        Ok(table)
    }
}

impl Deployment {
    /// Removes the pods the render plays (`podman kube down` misses a pod whose play failed
    /// half-way); what is not there is skipped.
    fn tear_down(&self) {
        let pods: Vec<String> = self.containers.iter().map(Container::pod_name).collect();
        let mut remove_pods = vec!["pod", "rm", "--force", "--ignore", "--time", "5"];
        remove_pods.extend(pods.iter().map(String::as_str));
        if let Err(error) = podman(&remove_pods) {
            eprintln!("{error:#}");
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        self.tear_down();
    }
}

/// The repository's root (this crate is one of its members).
fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support sits in the workspace root")
        .to_owned()
}

/// Runs podman with the project's settings file (`scripts/lib/podman.sh` writes it); its
/// stdout.
fn podman(args: &[&str]) -> anyhow::Result<String> {
    Ok(podman_output(args)?.stdout)
}

/// [`podman`], keeping what it printed on its stderr too.
fn podman_output(args: &[&str]) -> anyhow::Result<Printed> {
    let mut command = std::process::Command::new("podman");
    if std::env::var_os("CONTAINERS_CONF").is_none() {
        command.env(
            "CONTAINERS_CONF",
            repository_root().join(".cache/podman/containers.conf"),
        );
    }
    run_printing(command.args(args), "").with_context(|| format!("podman {}", args.join(" ")))
}

/// What a program that succeeded printed.
struct Printed {
    stdout: String,
    stderr: String,
}

/// `command`'s stdout, given `input` on its stdin; an error when it fails.
fn run_with_input(command: &mut std::process::Command, input: &str) -> anyhow::Result<String> {
    Ok(run_printing(command, input)?.stdout)
}

/// [`run_with_input`], keeping what it printed on its stderr too.
fn run_printing(command: &mut std::process::Command, input: &str) -> anyhow::Result<Printed> {
    use std::io::Write;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting the program")?;
    child
        .stdin
        .take()
        .context("the program's stdin")?
        .write_all(input.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(Printed {
        stdout: String::from_utf8(output.stdout)?,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Writes each key of the Secret `secret` to `dir/SECRET-NAME/KEY`, readable by any user (the
/// pods run as 65532, and podman applies no fsGroup).
fn write_secret_files(secret: &Value, dir: &Path) -> anyhow::Result<()> {
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;
    let name = secret["metadata"]["name"]
        .as_str()
        .context("a Secret's name")?;
    let own = dir.join(name);
    std::fs::create_dir_all(&own)?;
    let data = secret["data"].as_object().context("a Secret's data")?;
    for (key, value) in data {
        // kustomize wraps long values over several lines.
        let encoded: String = value
            .as_str()
            .context("a Secret value")?
            .split_ascii_whitespace()
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .with_context(|| format!("Secret {name} key {key}: not base64"))?;
        let path = own.join(key);
        std::fs::write(&path, bytes)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444))?;
    }
    Ok(())
}

/// Turns each `secret` volume of the Deployment `document` into a `hostPath` volume on the
/// directory [`write_secret_files`] filled for that Secret.
fn secret_volumes_to_host_paths(document: &mut Value, dir: &Path) -> anyhow::Result<()> {
    let Some(volumes) = document["spec"]["template"]["spec"]["volumes"].as_array_mut() else {
        return Ok(());
    };
    for volume in volumes {
        let Some(secret_name) = volume["secret"]["secretName"].as_str().map(str::to_owned) else {
            continue;
        };
        let path = dir.join(&secret_name);
        anyhow::ensure!(
            path.is_dir(),
            "a volume mounts Secret {secret_name}, which the render lacks"
        );
        let name = volume["name"].clone();
        *volume = serde_json::json!({
            "name": name,
            "hostPath": { "path": path.display().to_string(), "type": "Directory" },
        });
    }
    Ok(())
}

/// Each `NAME.example` template in place of `NAME` (the local overlay's datastore secrets,
/// which the podman overlay removes but kustomize still reads).
fn put_templates_in_place(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            put_templates_in_place(&path)?;
        } else if let Some(real) = path.to_str().and_then(|p| p.strip_suffix(".example")) {
            std::fs::copy(&path, real)?;
        }
    }
    Ok(())
}

/// The documents of a multi-document YAML stream, as JSON (PyYAML, from the test venv, reads
/// it: the workspace has no YAML parser and needs none elsewhere).
fn yaml_documents(yaml: &str) -> anyhow::Result<Vec<Value>> {
    let json = run_with_input(
        std::process::Command::new("python3").args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)",
        ]),
        yaml,
    )
    .context("reading YAML with python3 and PyYAML (scripts/install puts the test venv on PATH)")?;
    Ok(serde_json::from_str(&json)?)
}

/// The containers of every Deployment in `documents`.
fn containers_of(documents: &[Value]) -> anyhow::Result<Vec<Container>> {
    let mut found = Vec::new();
    for document in documents.iter().filter(|d| d["kind"] == "Deployment") {
        let deployment = document["metadata"]["name"]
            .as_str()
            .context("a Deployment's name")?;
        let specs = document["spec"]["template"]["spec"]["containers"]
            .as_array()
            .with_context(|| format!("{deployment} has containers"))?;
        for spec in specs {
            let probe = |field: &str| probe_of(spec, &spec[field]);
            found.push(Container {
                deployment: deployment.to_owned(),
                name: spec["name"]
                    .as_str()
                    .context("a container name")?
                    .to_owned(),
                image: spec["image"].as_str().context("an image")?.to_owned(),
                memory_limit: quantity_bytes(
                    spec["resources"]["limits"]["memory"]
                        .as_str()
                        .with_context(|| format!("{deployment} has a memory limit"))?,
                )?,
                startup: probe("startupProbe")?,
                liveness: probe("livenessProbe")?,
                readiness: probe("readinessProbe")?,
            });
        }
    }
    Ok(found)
}

fn probe_of(container: &Value, probe: &Value) -> anyhow::Result<Option<Probe>> {
    if probe.is_null() {
        return Ok(None);
    }
    let port = |value: &Value| -> anyhow::Result<u16> {
        if let Some(number) = value.as_u64() {
            return Ok(u16::try_from(number)?);
        }
        let name = value.as_str().context("a port number or name")?;
        container["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|n| u16::try_from(n).ok())
            .with_context(|| format!("no container port named {name}"))
    };
    if let Some(http) = probe.get("httpGet") {
        return Ok(Some(Probe::HttpGet {
            port: port(&http["port"])?,
            path: http["path"].as_str().unwrap_or("/").to_owned(),
        }));
    }
    if let Some(grpc) = probe.get("grpc") {
        return Ok(Some(Probe::Grpc {
            port: port(&grpc["port"])?,
        }));
    }
    bail!("a probe this harness does not run: {probe}")
}

/// A Kubernetes memory quantity (`256Mi`, `1Gi`, `500M`, plain bytes) in bytes.
fn quantity_bytes(quantity: &str) -> anyhow::Result<u64> {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(number) = quantity.strip_suffix(suffix) {
            return Ok(number.parse::<u64>()? * factor);
        }
    }
    Ok(quantity.parse()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities_read_as_kubernetes_reads_them() {
        assert_eq!(quantity_bytes("256Mi").unwrap(), 256 * 1024 * 1024);
        assert_eq!(quantity_bytes("1Gi").unwrap(), 1 << 30);
        assert_eq!(quantity_bytes("500M").unwrap(), 500_000_000);
        assert_eq!(quantity_bytes("4096").unwrap(), 4096);
        assert!(quantity_bytes("lots").is_err());
    }

    #[test]
    fn probes_resolve_named_ports_and_refuse_what_they_cannot_run() {
        let container = serde_json::json!({
            "ports": [{"name": "http", "containerPort": 8080}, {"name": "ops", "containerPort": 9090}]
        });
        let http = serde_json::json!({"httpGet": {"path": "/readyz", "port": "ops"}});
        assert_eq!(
            probe_of(&container, &http).unwrap(),
            Some(Probe::HttpGet {
                port: 9090,
                path: "/readyz".into()
            })
        );
        let grpc = serde_json::json!({"grpc": {"port": 50051}});
        assert_eq!(
            probe_of(&container, &grpc).unwrap(),
            Some(Probe::Grpc { port: 50051 })
        );
        assert_eq!(probe_of(&container, &Value::Null).unwrap(), None);
        let exec = serde_json::json!({"exec": {"command": ["true"]}});
        assert!(probe_of(&container, &exec).is_err());
        let unknown_port = serde_json::json!({"httpGet": {"path": "/", "port": "metrics"}});
        assert!(probe_of(&container, &unknown_port).is_err());
    }
}
