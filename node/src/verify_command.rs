//! `geiger verify`: checks a draw (or chain genesis) offline against a key
//! set, as an auditor or player would, and says what it checked.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use geiger_protocol::verify::Previous;
use geiger_protocol::{
    verify_chain, verify_draw, ChainResponse, DrawLookup, DrawResponse, KeySet, VerifyReport,
};

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// A draw as returned by `GET /v1/draws/{id}` (or its 201 body, or a
    /// chain's 201 body); `-` reads standard input.
    pub file: String,
    /// The key set: a file holding `GET /v1/keys` output, or that URL.
    #[arg(long, short)]
    pub keys: String,
    /// The record named as `previous`, to check the link to it as well.
    #[arg(long)]
    pub previous: Option<PathBuf>,
    /// PEM file of a private CA to trust when `--keys` is an `https://`
    /// URL, besides the public web roots.
    #[arg(long, env = "GEIGER_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

/// What the command was given, once parsed.
enum Record {
    Chain(ChainResponse),
    Draw {
        lookup_request: Option<geiger_protocol::DrawRequest>,
        response: Box<DrawResponse>,
    },
}

fn parse_record(text: &str) -> anyhow::Result<Record> {
    let value: serde_json::Value = serde_json::from_str(text).context("input is not JSON")?;
    if value.get("response").is_some() {
        let lookup: DrawLookup =
            serde_json::from_value(value).context("input is not a draw lookup")?;
        return Ok(Record::Draw {
            lookup_request: Some(lookup.request),
            response: Box::new(lookup.response),
        });
    }
    if value.get("draw").is_some() {
        let response = Box::new(serde_json::from_value(value).context("input is not a draw")?);
        return Ok(Record::Draw {
            lookup_request: None,
            response,
        });
    }
    if value.get("chain").is_some() {
        return Ok(Record::Chain(
            serde_json::from_value(value).context("input is not a chain")?,
        ));
    }
    bail!("input is neither a draw lookup, a draw nor a chain")
}

fn read_input(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))
    }
}

fn load_keys(source: &str, ca_file: Option<&std::path::Path>) -> anyhow::Result<KeySet> {
    let text = if source.starts_with("http://") || source.starts_with("https://") {
        let mut client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the CA file {}", path.display()))?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{} is not PEM certificates", path.display()))?;
            if roots.is_empty() {
                bail!("{} holds no PEM certificate", path.display());
            }
            for root in roots {
                client = client.add_root_certificate(root);
            }
        }
        let client = client.build()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime
            .block_on(async {
                let response = client.get(source).send().await?.error_for_status()?;
                response.text().await
            })
            .with_context(|| format!("fetching the key set from {source}"))?
    } else {
        std::fs::read_to_string(source).with_context(|| format!("reading {source}"))?
    };
    serde_json::from_str(&text).context("the key set is not `GET /v1/keys` JSON")
}

/// Runs the command; the exit code is 0 only when everything verifies.
pub fn run(args: VerifyArgs) -> anyhow::Result<i32> {
    let record = parse_record(&read_input(&args.file)?)?;
    let keys = load_keys(&args.keys, args.ca_file.as_deref())?;
    let previous = match &args.previous {
        Some(path) => Some(parse_record(&read_input(&path.to_string_lossy())?)?),
        None => None,
    };
    let previous_ref = previous.as_ref().map(|p| match p {
        Record::Chain(c) => Previous::Chain(c),
        Record::Draw { response, .. } => Previous::Draw(response),
    });

    let outcome: anyhow::Result<VerifyReport> = match &record {
        Record::Chain(chain) => verify_chain(chain, &keys).map_err(Into::into),
        Record::Draw {
            lookup_request,
            response,
        } => verify_draw(response, &keys, previous_ref)
            .map_err(anyhow::Error::from)
            .and_then(|mut report| {
                if let Some(request) = lookup_request {
                    check_request_matches(request, response)?;
                    report
                        .checks
                        .push("the recorded request matches the signed draw".into());
                }
                Ok(report)
            }),
    };
    match outcome {
        Ok(report) => {
            for check in report.checks {
                println!("ok   {check}");
            }
            println!("VERIFIED");
            Ok(0)
        }
        Err(e) => {
            println!("FAILED {e}");
            Ok(1)
        }
    }
}

fn check_request_matches(
    request: &geiger_protocol::DrawRequest,
    response: &DrawResponse,
) -> anyhow::Result<()> {
    let body = &response.draw.body;
    if request.previous != body.previous
        || request.tag != body.tag
        || request.spec != body.spec
        || request.request_id != body.request_id
    {
        bail!("the recorded request differs from the signed draw");
    }
    Ok(())
}
