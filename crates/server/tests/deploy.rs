//! The deployment files in deploy/ describe the binary of this tree: the Kubernetes manifest's
//! ConfigMap is a configuration ferrod starts with, its environment variables and arguments are
//! ones ferrod reads, its probes are answered as they expect, and the Service, the container
//! image and the Keycloak configuration agree on names and ports. A manifest no test reads rots
//! the first time a flag or a path changes.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use ferrod_codec::{status, ResponseBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yaml_rust2::{Yaml, YamlLoader};

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// The manifest's documents by kind.
fn manifest() -> HashMap<String, Yaml> {
    let text = std::fs::read_to_string(deploy_dir().join("kubernetes/ferrod.yaml")).unwrap();
    YamlLoader::load_from_str(&text)
        .expect("deploy/kubernetes/ferrod.yaml is valid YAML")
        .into_iter()
        .map(|d| {
            (
                d["kind"]
                    .as_str()
                    .expect("every document has a kind")
                    .to_string(),
                d,
            )
        })
        .collect()
}

fn str_of<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {y:?}"))
}

fn int_of(y: &Yaml, what: &str) -> i64 {
    y.as_i64()
        .unwrap_or_else(|| panic!("{what}: expected an integer, got {y:?}"))
}

/// One HTTP/1.1 GET on the HotRod port, as the kubelet's probe sends it: (status, body).
async fn probe_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.31\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("probe answered within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (code, body)
}

#[tokio::test]
async fn kubernetes_manifest_runs_this_binary_as_written() {
    let docs = manifest();
    let config_map = &docs["ConfigMap"];
    let deployment = &docs["Deployment"];
    let service = &docs["Service"];
    assert!(docs.contains_key("PodDisruptionBudget"));

    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    // Rolling updates never take a serving replica away before its successor is ready.
    let rolling = &deployment["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(int_of(&rolling["maxUnavailable"], "maxUnavailable"), 0);

    // The ConfigMap is mounted where the arguments point, and is a configuration ferrod runs.
    let args: Vec<&str> = container["args"]
        .as_vec()
        .expect("container args")
        .iter()
        .map(|a| str_of(a, "arg"))
        .collect();
    let mount = str_of(&container["volumeMounts"][0]["mountPath"], "mountPath");
    let config_name = str_of(&config_map["metadata"]["name"], "ConfigMap name");
    assert_eq!(
        str_of(
            &pod["volumes"][0]["configMap"]["name"],
            "volume's ConfigMap"
        ),
        config_name
    );
    let config_files = config_map["data"].as_hash().expect("ConfigMap data");
    let (file_name, toml) = config_files
        .iter()
        .next()
        .expect("one file in the ConfigMap");
    let file_name = str_of(file_name, "ConfigMap key");
    assert_eq!(
        args,
        ["--config", &format!("{mount}/{file_name}")],
        "the arguments name the mounted ConfigMap file"
    );
    let toml = str_of(toml, "ferrod.toml");

    // Every FERROD_* variable the manifest sets (plain values) or documents (commented out) is
    // one ferrod reads: its --help lists each variable it takes.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_ferrod"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let manifest_text =
        std::fs::read_to_string(deploy_dir().join("kubernetes/ferrod.yaml")).unwrap();
    let containerfile = std::fs::read_to_string(deploy_dir().join("Containerfile")).unwrap();
    let mut named = 0;
    for text in [&manifest_text, &containerfile] {
        for var in text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("FERROD_"))
        {
            named += 1;
            assert!(
                help.contains(&format!("[env: {var}=")),
                "{var} (in deploy/) is not an environment variable ferrod reads"
            );
        }
    }
    assert!(
        named >= 4,
        "expected the manifest's variables, found {named}"
    );
    let env: HashMap<&str, &Yaml> = container["env"]
        .as_vec()
        .expect("container env")
        .iter()
        .map(|e| (str_of(&e["name"], "env name"), e))
        .collect();
    let log_filter = str_of(&env["FERROD_LOG"]["value"], "FERROD_LOG");
    let secret = &env["FERROD_DATABASE_URL"]["valueFrom"]["secretKeyRef"];
    assert!(secret["name"].as_str().is_some() && secret["key"].as_str().is_some());

    // The image listens where the container port and the Service point.
    let container_port = &container["ports"][0];
    let port_name = str_of(&container_port["name"], "container port name");
    let port = int_of(&container_port["containerPort"], "containerPort");
    assert!(
        containerfile.contains(&format!("FERROD_LISTEN=0.0.0.0:{port}")),
        "Containerfile listens on the containerPort {port}"
    );
    assert!(containerfile.contains(&format!("EXPOSE {port}")));
    let service_port = &service["spec"]["ports"][0];
    assert_eq!(str_of(&service_port["targetPort"], "targetPort"), port_name);
    assert_eq!(
        str_of(&service["spec"]["selector"]["app"], "Service selector"),
        str_of(
            &deployment["spec"]["template"]["metadata"]["labels"]["app"],
            "pod label"
        )
    );

    // Keycloak's configuration points at the Service.
    let kc = std::fs::read_to_string(deploy_dir().join("keycloak/keycloak.conf")).unwrap();
    let service_name = str_of(&service["metadata"]["name"], "Service name");
    assert!(
        kc.contains(&format!("cache-remote-host={service_name}\n")),
        "{kc}"
    );
    assert!(
        kc.contains(&format!(
            "cache-remote-port={}\n",
            int_of(&service_port["port"], "Service port")
        )),
        "{kc}"
    );

    // Run the binary as the pod does: the ConfigMap as its configuration, the manifest's log
    // filter, a database (PostgreSQL when the suite has one, as in the manifest).
    let pg = PgDb::create("deploy").await;
    let mut opts = ServerOpts::with_config(toml).arg("--log").arg(log_filter);
    if let Some(db) = &pg {
        opts = opts.database(&db.url);
    }
    let mut server = Server::start_with(opts).await;
    let addr = server.addr();

    // The readiness probe: an HTTP GET on the HotRod port, answered 200 once ready.
    let readiness = &container["readinessProbe"]["httpGet"];
    assert_eq!(str_of(&readiness["port"], "readiness port"), port_name);
    let (code, body) = probe_get(&addr, str_of(&readiness["path"], "readiness path")).await;
    assert_eq!(code, 200, "readiness probe: {body}");
    assert!(body.contains("HEALTHY"), "{body}");
    // The liveness probe: a TCP connect on the same port.
    assert_eq!(
        str_of(
            &container["livenessProbe"]["tcpSocket"]["port"],
            "liveness port"
        ),
        port_name
    );

    // Every cache the ConfigMap declares is served.
    let declared: Vec<String> = toml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("name = "))
        .map(|n| n.trim_matches('"').to_string())
        .collect();
    assert!(declared.len() >= 4, "{declared:?}");
    for name in &declared {
        let mut c = server.client().await.with_cache(name);
        let r = c.ping().await;
        assert_eq!(r.header.status, status::SUCCESS, "PING on {name}: {r:?}");
        assert!(matches!(r.body, ResponseBody::Ping(_)), "{r:?}");
    }

    // The pod's grace period covers ferrod's graceful stop.
    let grace = int_of(
        &pod["terminationGracePeriodSeconds"],
        "terminationGracePeriodSeconds",
    );
    let started = std::time::Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(grace as u64),
        "a graceful stop took {:?}, longer than the pod's {grace} s",
        started.elapsed()
    );
}
