//! The engine facade against a private dockerd: image loads from store blobs (both manifest
//! formats, corrupt and unreadable blobs, a large layer in flat memory), an unreachable or
//! lost engine, and the state of a compose project's containers.

use crate::common::dockerd;
use crate::common::gate;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, HealthConfig, HostConfig, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, StartContainerOptions};
use dockerd::Dockerd;
use gate::{Gate, Hold};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use test_kit::gen::oci::{self, ImageFormat, ImageInfo, ImageSpec, LayerEntry};
use usb_update::apps::docker::{ContainerState, Engine, ImageToLoad};
use usb_update::Code;

fn blob(store: &Path, hex: &str) -> PathBuf {
    store.join("blobs/sha256").join(hex)
}

fn to_load(store: &Path, info: &ImageInfo, tag: &str) -> ImageToLoad {
    ImageToLoad {
        tag: tag.into(),
        config_digest: info.config_digest.clone(),
        config: blob(store, &info.config_digest),
        layers: info.layer_digests.iter().map(|d| blob(store, d)).collect(),
    }
}

/// A busybox image (with `false`, which the stock applet list lacks) written to `store`.
fn busybox(store: &Path, repo: &str, format: ImageFormat) -> ImageInfo {
    let mut spec = ImageSpec::busybox(repo, repo, &["sleep", "600"]);
    spec.layers[0].push(LayerEntry::symlink("bin/false", "busybox"));
    spec.format = format;
    oci::write_image(store, &spec).expect("write image")
}

fn connect(d: &Dockerd) -> Engine {
    Engine::connect_to(&d.host()).expect("connect to the private dockerd")
}

fn tagged(engine: &Engine, tag: &str) -> Vec<String> {
    let images = engine.images().expect("images");
    images
        .into_iter()
        .filter(|i| i.repo_tags.iter().any(|t| t == tag))
        .map(|i| i.id)
        .collect()
}

#[track_caller]
fn assert_err<T>(r: usb_update::Result<T>, code: Code, parts: &[&str]) -> String {
    let Err(e) = r else {
        panic!("succeeded; expected code {code} with {parts:?}")
    };
    let msg = e.one_line();
    assert_eq!(e.code(), code, "{msg}");
    for p in parts {
        assert!(msg.contains(p), "{msg:?} does not contain {p:?}");
    }
    msg
}

/// Waits for `what`; the deadline is a guard against hanging, not a limit on the engine.
fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn loads_oci_and_docker_v2s2_images() {
    let d = Dockerd::start();
    let engine = connect(&d);
    assert_eq!(engine.host(), d.host());
    let store = TempDir::new().unwrap();
    for (format, repo) in [
        (ImageFormat::Oci, "hub.foundries.io/f/oci"),
        (ImageFormat::DockerV2S2, "hub.foundries.io/f/v2s2"),
    ] {
        let info = busybox(store.path(), repo, format);
        let id = format!("sha256:{}", info.config_digest);
        let tag = format!("{repo}:abc1234");
        assert!(!engine.has_image(&id).unwrap());
        engine.load(&to_load(store.path(), &info, &tag)).unwrap();
        assert!(engine.has_image(&id).unwrap());
        assert!(engine.has_image(&tag).unwrap());
        assert_eq!(tagged(&engine, &tag), [id.as_str()]);
        // Again, as after an interrupted installation: harmless.
        engine.load(&to_load(store.path(), &info, &tag)).unwrap();
        assert_eq!(tagged(&engine, &tag), [id.as_str()]);
    }
    assert_eq!(engine.images().unwrap().len(), 2);
}

#[test]
fn tag_and_remove_image() {
    let d = Dockerd::start();
    let engine = connect(&d);
    let store = TempDir::new().unwrap();
    let info = busybox(store.path(), "hub.foundries.io/f/app", ImageFormat::Oci);
    let id = format!("sha256:{}", info.config_digest);
    engine
        .load(&to_load(store.path(), &info, "hub.foundries.io/f/app:v1"))
        .unwrap();
    engine.tag(&id, "hub.foundries.io/f/app:v2").unwrap();
    assert_eq!(tagged(&engine, "hub.foundries.io/f/app:v2"), [id.as_str()]);
    let msg = assert_err(
        engine.tag("sha256:0000", "x/y:z"),
        Code::Internal,
        &["tagging image sha256:0000 as x/y:z", "404"],
    );
    eprintln!("tag of an absent image: {msg}");
    // Referenced by two tags: the engine refuses to remove it by id without force.
    assert!(!engine.remove_image(&id).unwrap());
    assert!(engine.remove_image("hub.foundries.io/f/app:v2").unwrap());
    assert!(engine.has_image(&id).unwrap());
    assert!(engine.remove_image(&id).unwrap());
    assert!(!engine.has_image(&id).unwrap());
    assert!(!engine.remove_image(&id).unwrap());
    assert!(engine.images().unwrap().is_empty());
}

#[test]
fn corrupted_layer_is_refused_with_code_50() {
    let d = Dockerd::start();
    let engine = connect(&d);
    let store = TempDir::new().unwrap();
    let (_, other) =
        oci::layer_tar_gz(&[LayerEntry::file("etc/image-marker", "tampered\n", 0o644)]).unwrap();
    let garbage = vec![0x5a_u8; 3000];
    for (repo, bytes) in [("f/diffid", other), ("f/garbage", garbage)] {
        let info = busybox(store.path(), repo, ImageFormat::Oci);
        std::fs::write(blob(store.path(), &info.layer_digests[1]), bytes).unwrap();
        let tag = format!("{repo}:v1");
        let msg = assert_err(
            engine.load(&to_load(store.path(), &info, &tag)),
            Code::Copy,
            &[&format!("the Docker engine refused image {tag}: ")],
        );
        eprintln!("{repo}: {msg}");
        assert!(!engine
            .has_image(&format!("sha256:{}", info.config_digest))
            .unwrap());
        assert!(tagged(&engine, &tag).is_empty());
    }
}

#[test]
fn unreadable_blob_is_named() {
    let d = Dockerd::start();
    let engine = connect(&d);
    let store = TempDir::new().unwrap();
    let info = busybox(store.path(), "f/app", ImageFormat::Oci);
    let dir = store.path().join("a-directory");
    std::fs::create_dir(&dir).unwrap();
    for bad in [store.path().join("missing"), dir] {
        let mut image = to_load(store.path(), &info, "f/app:v1");
        image.layers[1] = bad.clone();
        let msg = assert_err(
            engine.load(&image),
            Code::Internal,
            &[
                "loading image f/app:v1",
                &format!("reading {}", bad.display()),
            ],
        );
        eprintln!("{msg}");
        assert!(!engine
            .has_image(&format!("sha256:{}", info.config_digest))
            .unwrap());
    }
    // The engine is still fine.
    engine
        .load(&to_load(store.path(), &info, "f/app:v1"))
        .unwrap();
}

#[test]
fn unreachable_engine_is_code_52() {
    let mut d = Dockerd::start();
    let socket = d.socket().display().to_string();
    d.stop();
    assert!(!d.is_running());
    assert_err(
        Engine::connect_to(&d.host()),
        Code::DockerUnavailable,
        &[&format!("the Docker engine at {socket} is not reachable: ")],
    );

    // A socket nobody listens on, as after a crash.
    let tmp = TempDir::new().unwrap();
    let stale = tmp.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let msg = assert_err(
        Engine::connect_to(&format!("unix://{}", stale.display())),
        Code::DockerUnavailable,
        &[&format!(
            "the Docker engine at {} is not reachable: ",
            stale.display()
        )],
    );
    eprintln!("{msg}");
    assert!(msg.contains("Connection refused"), "{msg}");

    assert_err(
        Engine::connect_to("tcp://127.0.0.1:2375"),
        Code::DockerUnavailable,
        &["tcp://127.0.0.1:2375", "only unix://"],
    );

    // $DOCKER_HOST, as `connect` reads it (the process environment stays as it is: other
    // tests of this binary may share it).
    let stale_host = format!("unix://{}", stale.display());
    assert_eq!(Engine::host_from(Some(stale_host.clone())), stale_host);
    for unset in [None, Some(String::new())] {
        assert_eq!(Engine::host_from(unset), "unix:///var/run/docker.sock");
    }
    assert_err(
        Engine::connect_to(&Engine::host_from(Some(stale_host))),
        Code::DockerUnavailable,
        &[&stale.display().to_string()],
    );
}

#[test]
fn engine_lost_after_connect_is_code_52() {
    let mut d = Dockerd::start();
    let socket = d.socket().display().to_string();
    let engine = connect(&d);
    let store = TempDir::new().unwrap();
    let info = busybox(store.path(), "f/app", ImageFormat::Oci);
    d.stop();
    let msg = assert_err(
        engine.has_image("f/app:v1"),
        Code::DockerUnavailable,
        &[&format!(
            "lost the Docker engine at {socket} while inspecting image f/app:v1"
        )],
    );
    eprintln!("{msg}");
    assert_err(
        engine.load(&to_load(store.path(), &info, "f/app:v1")),
        Code::DockerUnavailable,
        &[&format!("at {socket} while loading image f/app:v1")],
    );
    assert_err(
        engine.project_containers("p"),
        Code::DockerUnavailable,
        &["while listing the containers of project p"],
    );
}

/// A plain tar layer holding one file of `size` zeros, sparse on disk (cheap to write).
fn sparse_layer(dir: &Path, size: u64) -> PathBuf {
    let layer = dir.join("big.tar");
    let mut h = tar::Header::new_gnu();
    h.set_path("big").unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    let mut f = std::fs::File::create(&layer).unwrap();
    f.write_all(h.as_bytes()).unwrap();
    f.set_len(512 + size.next_multiple_of(512) + 1024).unwrap();
    layer
}

/// An image of `layer` whose config claims `diff_id`.
fn image_of(store: &Path, tag: &str, layer: PathBuf, diff_id: &str) -> ImageToLoad {
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
    });
    let config_digest = oci::write_blob(store, config.to_string().as_bytes()).unwrap();
    ImageToLoad {
        tag: tag.into(),
        config: blob(store, &config_digest),
        config_digest,
        layers: vec![layer],
    }
}

#[test]
fn large_layer_streams_in_flat_memory() {
    const SIZE: u64 = 384 << 20;
    let d = Dockerd::start();
    let engine = connect(&d);
    let store = TempDir::new().unwrap();
    let layer = sparse_layer(store.path(), SIZE);
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(&layer).unwrap(), &mut hasher).unwrap();
    let diff_id = format!("{:x}", hasher.finalize());
    let image = image_of(store.path(), "f/big:v1", layer, &diff_id);
    let before = peak_rss_kib();
    let started = Instant::now();
    engine.load(&image).unwrap();
    let grew = peak_rss_kib() - before;
    eprintln!(
        "384 MiB layer loaded in {:?}, peak RSS +{grew} KiB",
        started.elapsed()
    );
    assert!(grew < 64 << 10, "peak RSS grew by {grew} KiB");
    assert!(engine
        .has_image(&format!("sha256:{}", image.config_digest))
        .unwrap());
}

/// dockerd goes away while it receives a layer: 52, not a content error. A gate passes the
/// first 16 MiB of the load request and holds the rest, so the engine cannot finish the
/// load (and answer 50 for the diff id) before it is stopped, however fast it is.
#[test]
fn engine_lost_during_load_is_code_52() {
    let mut d = Dockerd::start();
    let gate = Gate::new(
        &d.socket(),
        Hold {
            method: "POST",
            path: |p| p == "/images/load",
            pass: 16 << 20,
        },
    );
    let store = TempDir::new().unwrap();
    let layer = sparse_layer(store.path(), 256 << 20);
    // The engine never gets far enough to check the diff id.
    let image = image_of(store.path(), "f/big:v1", layer, &"0".repeat(64));
    let engine = Engine::connect_to(&gate.host()).unwrap();
    let loading = std::thread::spawn(move || engine.load(&image));
    gate.wait_held(|| {
        loading
            .is_finished()
            .then(|| "the load ended before the gate held it".to_string())
    });
    // dockerd unpacks what it receives under <data-root>/tmp/docker-import-*.
    let tmp = d.root().join("data/tmp");
    wait_until("dockerd receiving the layer", || {
        let receiving = std::fs::read_dir(&tmp).ok()?.flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("docker-import-")
        });
        receiving.then_some(())
    });
    d.stop();
    let msg = assert_err(
        loading.join().unwrap(),
        Code::DockerUnavailable,
        &[&format!(
            "lost the Docker engine at {} while loading image f/big:v1: ",
            gate.socket().display()
        )],
    );
    eprintln!("{msg}");
}

fn peak_rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Creates containers the way compose labels them, through bollard directly.
struct Client {
    rt: tokio::runtime::Runtime,
    docker: bollard::Docker,
}

struct Service<'a> {
    project: &'a str,
    service: &'a str,
    cmd: &'a [&'a str],
    /// A CMD-SHELL healthcheck probed every 200 ms.
    health: Option<&'a str>,
    restart: Option<RestartPolicyNameEnum>,
}

impl Client {
    fn new(d: &Dockerd) -> Client {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let socket = d.socket();
        let docker = bollard::Docker::connect_with_unix(
            socket.to_str().unwrap(),
            120,
            bollard::API_DEFAULT_VERSION,
        )
        .unwrap();
        let docker = rt.block_on(docker.negotiate_version()).unwrap();
        Client { rt, docker }
    }

    fn run(&self, image: &str, s: Service) -> String {
        let name = format!("{}-{}-1", s.project, s.service);
        let labels = HashMap::from([
            (
                "com.docker.compose.project".to_string(),
                s.project.to_string(),
            ),
            (
                "com.docker.compose.service".to_string(),
                s.service.to_string(),
            ),
        ]);
        let body = ContainerCreateBody {
            image: Some(image.into()),
            cmd: Some(s.cmd.iter().map(|c| c.to_string()).collect()),
            labels: Some(labels),
            healthcheck: s.health.map(|t| HealthConfig {
                test: Some(vec!["CMD-SHELL".into(), t.into()]),
                interval: Some(200_000_000),
                timeout: Some(2_000_000_000),
                retries: Some(1),
                ..Default::default()
            }),
            // busybox as pid 1 ignores SIGTERM: dockerd would wait 10 s for it at shutdown.
            stop_signal: Some("SIGKILL".into()),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                restart_policy: s.restart.map(|name| RestartPolicy {
                    name: Some(name),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = self
            .rt
            .block_on(self.docker.create_container(Some(options), body))
            .unwrap();
        self.rt
            .block_on(
                self.docker
                    .start_container(&created.id, None::<StartContainerOptions>),
            )
            .unwrap();
        created.id
    }
}

fn by_service<'a>(list: &'a [ContainerState], service: &str) -> &'a ContainerState {
    list.iter()
        .find(|c| c.service.as_deref() == Some(service))
        .unwrap_or_else(|| panic!("no container of service {service} in {list:#?}"))
}

#[test]
fn project_containers_report_health_and_exit_codes() {
    let d = Dockerd::start();
    let engine = connect(&d);
    let client = Client::new(&d);
    let store = TempDir::new().unwrap();
    let info = busybox(store.path(), "f/app", ImageFormat::Oci);
    engine
        .load(&to_load(store.path(), &info, "f/app:v1"))
        .unwrap();
    let image_id = format!("sha256:{}", info.config_digest);
    let service = |service, cmd, health| Service {
        project: "shop",
        service,
        cmd,
        health,
        restart: None,
    };
    let web = client.run(
        "f/app:v1",
        service(
            "web",
            &["sh", "-c", "touch /tmp/ready; exec sleep 600"],
            Some("test -e /tmp/ready"),
        ),
    );
    client.run(
        "f/app:v1",
        service("sick", &["sleep", "600"], Some("exit 1")),
    );
    client.run("f/app:v1", service("job", &["false"], None));
    client.run("f/app:v1", service("plain", &["sleep", "600"], None));
    client.run(
        "f/app:v1",
        Service {
            project: "other",
            ..service("web", &["sleep", "600"], None)
        },
    );

    let list = wait_until("web healthy, sick unhealthy, job exited", || {
        let list = engine.project_containers("shop").unwrap();
        let settled = by_service(&list, "web").health.as_deref() == Some("healthy")
            && by_service(&list, "sick").health.as_deref() == Some("unhealthy")
            && by_service(&list, "job").status == "exited";
        settled.then_some(list)
    });
    let names: Vec<&str> = list.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["shop-job-1", "shop-plain-1", "shop-sick-1", "shop-web-1"]
    );

    let w = by_service(&list, "web");
    assert_eq!(w.id, web);
    assert_eq!(w.image_id, image_id);
    assert_eq!(
        (
            w.status.as_str(),
            w.running,
            w.restarting,
            w.restart_count,
            w.exit_code
        ),
        ("running", true, false, 0, None)
    );
    let s = by_service(&list, "sick");
    assert_eq!((s.status.as_str(), s.running), ("running", true));
    let j = by_service(&list, "job");
    assert_eq!(
        (
            j.status.as_str(),
            j.running,
            j.exit_code,
            j.health.as_deref()
        ),
        ("exited", false, Some(1), None)
    );
    let p = by_service(&list, "plain");
    assert_eq!((p.status.as_str(), p.health.as_deref()), ("running", None));

    assert!(engine.project_containers("nothing").unwrap().is_empty());
    // In use by containers: the engine refuses, and the image stays.
    assert!(!engine.remove_image("f/app:v1").unwrap());
    assert!(engine.has_image(&image_id).unwrap());
}

#[test]
fn dockerd_restarts_containers_and_leaves_nothing_behind() {
    let mut d = Dockerd::start();
    let root = d.root().to_path_buf();
    let engine = connect(&d);
    let client = Client::new(&d);
    let store = TempDir::new().unwrap();
    let info = busybox(store.path(), "f/app", ImageFormat::Oci);
    engine
        .load(&to_load(store.path(), &info, "f/app:v1"))
        .unwrap();
    let service = |service, restart| Service {
        project: "p",
        service,
        cmd: &["sleep", "600"],
        health: None,
        restart,
    };
    client.run(
        "f/app:v1",
        service("kept", Some(RestartPolicyNameEnum::ALWAYS)),
    );
    client.run("f/app:v1", service("once", None));
    assert!(
        dockerd::processes_under(&root).len() >= 4,
        "containerd, shims, containers"
    );
    assert!(!dockerd::mounts_under(&root).is_empty());

    let started = Instant::now();
    d.restart();
    eprintln!(
        "restart with two running containers: {:?}",
        started.elapsed()
    );
    assert!(d.is_running());
    let engine = connect(&d);
    let list = wait_until("the container with a restart policy running again", || {
        let list = engine.project_containers("p").unwrap();
        by_service(&list, "kept").running.then_some(list)
    });
    let once = by_service(&list, "once");
    assert_eq!((once.status.as_str(), once.running), ("exited", false));

    // A crash leaves the shims and the container running: Drop must end them.
    d.kill();
    assert!(!d.is_running());
    assert!(
        !dockerd::processes_under(&root).is_empty(),
        "shim and container"
    );
    drop(engine);
    drop(client);
    drop(d);
    assert_eq!(dockerd::processes_under(&root), Vec::<u32>::new());
    assert_eq!(dockerd::mounts_under(&root), Vec::<PathBuf>::new());
    assert!(!root.exists());
}
