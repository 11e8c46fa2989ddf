//! `geiger ctl`: operator commands over the admin API, through the client
//! SDK (so they fail over between the endpoints given).

mod table;

use geiger_client::{Client, ClientBuilder};
use serde_json::{json, Value};

#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Node API URLs, comma-separated, or one public name
    /// (`http://api.geiger.example`): a name is resolved to every address
    /// it has and the command fails over between them. Any node answers.
    #[arg(
        long,
        env = "GEIGER_URL",
        default_value = "http://127.0.0.1:8080",
        value_delimiter = ','
    )]
    pub url: Vec<String>,
    /// The admin token (`api.admin_token` of the nodes); every command but
    /// `cert` needs it.
    #[arg(long, env = "GEIGER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// PEM file of a private CA to trust for `https://` URLs, besides the
    /// public web roots.
    #[arg(long, env = "GEIGER_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CtlCommand {
    /// Members, zones, roles, leader, lag, links, pool, and what the placement survives.
    Status {
        /// Print the raw JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Customers.
    #[command(subcommand)]
    Customer(CustomerCommand),
    /// Cluster membership.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Hardware links (one per device).
    #[command(subcommand)]
    Link(LinkCommand),
    /// Signing keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Saves a consistent copy of the ledger (snapshot format) to FILE.
    Backup { file: std::path::PathBuf },
    /// The cluster CA and node certificates for mutual TLS between members
    /// (files only: no node is contacted).
    #[command(subcommand)]
    Cert(CertCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// Makes a new cluster CA: DIR/ca.pem (give it to every node) and
    /// DIR/ca.key (keep it offline; needed only to issue certificates).
    Ca {
        #[arg(long)]
        dir: std::path::PathBuf,
        /// The cluster's name, written into the CA's name.
        #[arg(long, default_value = "geiger")]
        cluster: String,
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Issues node ID's certificate (naming node-ID.geiger.internal):
    /// OUT/node-ID.pem and OUT/node-ID.key, signed by the CA in CA_DIR.
    Node {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        ca_dir: std::path::PathBuf,
        #[arg(long)]
        out: std::path::PathBuf,
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum LinkCommand {
    /// Registers a device (`geiger-device --print-key` prints its id and key).
    Add {
        #[arg(long)]
        device: String,
        /// `host:port` of the device agent.
        #[arg(long)]
        address: String,
        /// The device's Ed25519 public key, hex or base64.
        #[arg(long)]
        public_key: String,
    },
    /// Links with their owner, epoch, lease and pool depth.
    List,
    /// Prints the devices' trusted-nodes file: every member's link key,
    /// asked of the member itself (all must answer; docs/LINK.md).
    TrustedNodes,
    /// Unregisters a device; its lease ends at once.
    Remove { device: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum CustomerCommand {
    /// Creates a customer; prints its API key, which is shown only once.
    Create { name: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum MemberCommand {
    /// Adds a node as a non-voting learner.
    Add {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        api_addr: String,
        #[arg(long)]
        rpc_addr: String,
        #[arg(long)]
        zone: String,
        #[arg(long)]
        cloud: String,
        #[arg(long, default_value = "")]
        region: String,
    },
    /// Makes a learner a voter.
    Promote { id: u64 },
    /// Removes a node from the cluster.
    Remove { id: u64 },
}

#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Retires the signing key and starts a new one; old draws still verify.
    Rotate,
}

fn client(args: &CtlArgs) -> anyhow::Result<Client> {
    client_for(args, args.url.clone())
}

fn client_for(args: &CtlArgs, urls: Vec<String>) -> anyhow::Result<Client> {
    let token = args
        .admin_token
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--admin-token (or GEIGER_ADMIN_TOKEN) is required"))?;
    let mut builder = ClientBuilder::new(urls).admin_token(token);
    if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("reading the CA file {}: {e}", path.display()))?;
        builder = builder.trust_ca_pem(pem);
    }
    Ok(builder.build()?)
}

/// Asks each member of `status` for its own link key and prints the file
/// devices list them in. A member that does not answer for itself fails
/// the command: a partial list would raise or lower the number of
/// attestations a device wants (docs/LINK.md).
async fn trusted_nodes(args: &CtlArgs, status: &Value) -> anyhow::Result<i32> {
    let scheme = args
        .url
        .first()
        .and_then(|u| u.split_once("://"))
        .map_or("http", |(scheme, _)| scheme);
    let role = |id: u64| {
        let listed = |key: &str| {
            status[key]
                .as_array()
                .is_some_and(|ids| ids.iter().any(|v| v.as_u64() == Some(id)))
        };
        if listed("voters") {
            "voter"
        } else if listed("learners") {
            "learner"
        } else {
            "member"
        }
    };
    let mut lines = vec![
        "# device link keys of the cluster's members (geiger ctl link trusted-nodes)".to_string(),
    ];
    let mut missing = Vec::new();
    for (id, member) in status["members"].as_object().into_iter().flatten() {
        let id_num: u64 = id.parse().unwrap_or(0);
        let addr = member["api_addr"].as_str().unwrap_or_default();
        let own = client_for(args, vec![format!("{scheme}://{addr}")])?;
        match own.admin_get("/v1/cluster/status").await {
            Ok(s) if s["answered_by"].as_u64() == Some(id_num) && s["link_key"].is_string() => {
                lines.push(format!(
                    "{}  # node {id} ({}, {}, {})",
                    s["link_key"].as_str().unwrap_or_default(),
                    role(id_num),
                    text(&member["zone"]),
                    text(&member["cloud"])
                ));
            }
            Ok(_) => missing.push(format!("node {id} at {addr}: another node answered")),
            Err(e) => missing.push(format!("node {id} at {addr}: {e}")),
        }
    }
    if !missing.is_empty() {
        for m in &missing {
            eprintln!("no link key from {m}");
        }
        eprintln!("every member must answer for itself; nothing printed");
        return Ok(1);
    }
    for line in lines {
        println!("{line}");
    }
    Ok(0)
}

fn cert(command: &CertCommand) -> anyhow::Result<i32> {
    use crate::cluster_certs;
    match command {
        CertCommand::Ca { dir, cluster, days } => {
            let (cert, key) = cluster_certs::create_ca(dir, cluster, *days)?;
            println!("CA certificate {}", cert.display());
            println!("CA key         {}   (keep it offline)", key.display());
        }
        CertCommand::Node {
            id,
            ca_dir,
            out,
            days,
        } => {
            let (ca, ca_key) = cluster_certs::ca_files(ca_dir);
            let (cert, key) = cluster_certs::issue_node(&ca, &ca_key, *id, *days, out)?;
            println!(
                "node {id}: {} and {} (naming {})",
                cert.display(),
                key.display(),
                geiger_control_plane::raft_network::peer_name(*id)
            );
        }
    }
    Ok(0)
}

/// Runs one command; returns the exit code.
pub async fn run(args: CtlArgs) -> anyhow::Result<i32> {
    if let CtlCommand::Cert(command) = &args.command {
        return cert(command);
    }
    let client = client(&args)?;
    match &args.command {
        CtlCommand::Status { json } => {
            let status = client.admin_get("/v1/cluster/status").await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", render_status(&status));
            }
        }
        CtlCommand::Customer(CustomerCommand::Create { name }) => {
            let created = client
                .admin_post("/v1/admin/customers", &json!({ "name": name }))
                .await?;
            println!("customer {}", created["id"].as_str().unwrap_or("?"));
            println!(
                "api key  {}   (shown once; store it now)",
                created["api_key"].as_str().unwrap_or("?")
            );
        }
        CtlCommand::Member(m) => {
            let body = match m {
                MemberCommand::Add {
                    id,
                    api_addr,
                    rpc_addr,
                    zone,
                    cloud,
                    region,
                } => json!({"action": "add_learner", "id": id, "member": {
                    "api_addr": api_addr, "rpc_addr": rpc_addr, "zone": zone, "cloud": cloud, "region": region}}),
                MemberCommand::Promote { id } => json!({"action": "promote", "id": id}),
                MemberCommand::Remove { id } => json!({"action": "remove", "id": id}),
            };
            let answer = client.admin_post("/v1/admin/members", &body).await?;
            print!("{}", render_placement(&answer["placement"]));
        }
        CtlCommand::Link(LinkCommand::Add {
            device,
            address,
            public_key,
        }) => {
            let body = json!({"device": device, "address": address, "public_key": public_key});
            client.admin_post("/v1/admin/links", &body).await?;
            println!("link {device} registered at {address}");
        }
        CtlCommand::Link(LinkCommand::List) => {
            let links = client.admin_get("/v1/admin/links").await?;
            print!("{}", render_links(&links));
        }
        CtlCommand::Link(LinkCommand::TrustedNodes) => {
            let status = client.admin_get("/v1/cluster/status").await?;
            return trusted_nodes(&args, &status).await;
        }
        CtlCommand::Link(LinkCommand::Remove { device }) => {
            client
                .admin_delete(&format!("/v1/admin/links/{device}"))
                .await?;
            println!("link {device} removed");
        }
        CtlCommand::Backup { file } => {
            let partial = file.with_extension("partial");
            let mut out = tokio::fs::File::create(&partial).await?;
            let (bytes, headers) = client.admin_download("/v1/admin/backup", &mut out).await?;
            out.sync_all().await?;
            tokio::fs::rename(&partial, file).await?;
            let index = headers
                .get("geiger-backup-index")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?");
            println!(
                "backup of log index {index}: {bytes} bytes in {}",
                file.display()
            );
        }
        CtlCommand::Key(KeyCommand::Rotate) => {
            let answer = client
                .admin_post("/v1/admin/keys/rotate", &json!({}))
                .await?;
            println!(
                "new signing key {}",
                answer["key_id"].as_str().unwrap_or("?")
            );
        }
        CtlCommand::Cert(command) => return cert(command),
    }
    Ok(0)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn yes_no(v: &Value) -> &'static str {
    if v.as_bool().unwrap_or(false) {
        "yes"
    } else {
        "NO"
    }
}

fn render_placement(p: &Value) -> String {
    format!(
        "placement: {} voters, majority {}; survives loss of a node: {}, a zone: {}, a cloud: {}\n{}",
        text(&p["voters"]),
        text(&p["majority"]),
        yes_no(&p["survives_node_loss"]),
        yes_no(&p["survives_zone_loss"]),
        yes_no(&p["survives_cloud_loss"]),
        p["warnings"]
            .as_array()
            .map(|w| w.iter().map(|x| format!("  warning: {}\n", text(x))).collect::<String>())
            .unwrap_or_default()
    )
}

fn render_links(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["links"]
        .as_array()
        .map(|links| {
            links
                .iter()
                .map(|l| {
                    vec![
                        text(&l["device"]),
                        text(&l["address"]),
                        text(&l["owner"]),
                        text(&l["epoch"]),
                        if l["lease_active"].as_bool().unwrap_or(false) {
                            "active"
                        } else {
                            "EXPIRED"
                        }
                        .into(),
                        text(&l["pooled_bytes"]),
                        text(&l["quarantined_chunks"]),
                        if l["unhealthy"].as_bool().unwrap_or(false) {
                            "UNHEALTHY"
                        } else {
                            "ok"
                        }
                        .into(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table::render(
        &[
            "device",
            "address",
            "owner",
            "epoch",
            "lease",
            "pooled bytes",
            "quarantined",
            "health",
        ],
        &rows,
    )
}

/// The status report as tables.
pub fn render_status(s: &Value) -> String {
    let leader = s["leader"].as_u64();
    let voters: Vec<u64> = s["voters"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let lag_of = |id: u64| -> String {
        s["peers"]
            .as_array()
            .and_then(|peers| peers.iter().find(|p| p["id"].as_u64() == Some(id)))
            .map_or("-".into(), |p| text(&p["lag"]))
    };
    let mut rows = Vec::new();
    if let Some(members) = s["members"].as_object() {
        for (id, m) in members {
            let id_num: u64 = id.parse().unwrap_or(0);
            let role = if Some(id_num) == leader {
                "leader"
            } else if voters.contains(&id_num) {
                "voter"
            } else {
                "learner"
            };
            rows.push(vec![
                id.clone(),
                role.into(),
                text(&m["cloud"]),
                text(&m["zone"]),
                text(&m["api_addr"]),
                if Some(id_num) == leader {
                    "0".into()
                } else {
                    lag_of(id_num)
                },
            ]);
        }
    }
    let mut out = format!(
        "cluster: leader {} in term {}, answered by node {} ({}), applied index {}\n\n",
        leader.map_or("none".to_string(), |l| l.to_string()),
        text(&s["term"]),
        text(&s["answered_by"]),
        if s["ready"].as_bool().unwrap_or(false) {
            "ready".to_string()
        } else {
            format!("NOT READY: {}", text(&s["not_ready_because"]))
        },
        text(&s["last_applied_index"]),
    );
    if let Some(cluster) = s["feature_level"]["cluster"].as_u64() {
        out.push_str(&format!(
            "feature level: {cluster} in force, up to {} in the answering node's build\n\n",
            text(&s["feature_level"]["build"]),
        ));
    }
    out.push_str(&table::render(
        &["node", "role", "cloud", "zone", "api", "lag (entries)"],
        &rows,
    ));
    out.push('\n');
    let leases = s["leases"].as_array().cloned().unwrap_or_default();
    let device_rows: Vec<Vec<String>> = s["devices"]
        .as_array()
        .map(|devices| {
            devices
                .iter()
                .map(|d| {
                    let device = text(&d["device"]);
                    let lease = leases.iter().find(|l| text(&l["device"]) == device);
                    vec![
                        device,
                        lease.map_or("-".into(), |l| text(&l["owner"])),
                        lease.map_or("-".into(), |l| text(&l["epoch"])),
                        text(&d["pooled_bytes"]),
                        match &s["pool_seconds_of_demand"][d["device"].as_str().unwrap_or("")] {
                            Value::Null => "no demand".into(),
                            v => format!("{:.0}", v.as_f64().unwrap_or(0.0)),
                        },
                        text(&d["used_bytes"]),
                        text(&d["quarantined_chunks"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&format!("entropy pool: {} bytes\n", text(&s["pool_bytes"])));
    out.push_str(&table::render(
        &[
            "device",
            "owner",
            "epoch",
            "pooled bytes",
            "used bytes",
            "quarantined chunks",
        ],
        &device_rows,
    ));
    out.push('\n');
    out.push_str(&render_sources(s));
    out.push_str(&render_placement(&s["placement"]));
    out
}

/// The sources of the devices whose sessions run on the answering node.
fn render_sources(s: &Value) -> String {
    let Some(sources) = s["sources"].as_object().filter(|m| !m.is_empty()) else {
        return String::new();
    };
    let rows: Vec<Vec<String>> = sources
        .iter()
        .map(|(device, v)| {
            let num = |k: &str| v[k].as_f64().unwrap_or(0.0);
            vec![
                device.clone(),
                format!("{:.0}", num("count_rate_per_second")),
                format!("{:.0}", num("raw_bits_per_second")),
                format!("{:.0}", num("output_bytes_per_second")),
                format!("{:.4}%", 100.0 * num("rejected_fraction")),
                format!("{:.0}", num("uptime_seconds")),
            ]
        })
        .collect();
    format!(
        "sources reported to node {} (averages since each source opened):\n{}\n",
        text(&s["answered_by"]),
        table::render(
            &[
                "device",
                "counts/s",
                "raw bits/s",
                "output bytes/s",
                "rejected",
                "uptime (s)",
            ],
            &rows,
        )
    )
}
