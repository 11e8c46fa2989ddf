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
    /// Also check the provenance of every entropy segment of a draw
    /// (docs/DERIVATION.md §10): the cluster's base URL (chunks are fetched
    /// from `URL/v1/chunks/{device}/{seq}`), or a directory holding each
    /// chunk's 200 body as `{device}-{seq}.json`. The key set must list the
    /// device keys (`devices` in `GET /v1/keys`).
    #[arg(long)]
    pub chunks: Option<String>,
    /// PEM file of a private CA to trust when `--keys` or `--chunks` is an
    /// `https://` URL, besides the public web roots.
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

fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// A client trusting the public web roots and `ca_file`'s certificates.
fn http_client(ca_file: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
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
    Ok(client.build()?)
}

fn load_keys(source: &str, ca_file: Option<&std::path::Path>) -> anyhow::Result<KeySet> {
    let text = if is_url(source) {
        let client = http_client(ca_file)?;
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
    let report = match outcome {
        Ok(report) => report,
        Err(e) => {
            println!("FAILED {e}");
            return Ok(1);
        }
    };
    for check in &report.checks {
        println!("ok   {check}");
    }
    let (Some(source), Record::Draw { response, .. }) = (&args.chunks, &record) else {
        println!("VERIFIED");
        return Ok(0);
    };
    let results = check_provenance(response, &keys, source, args.ca_file.as_deref())?;
    let mut pending = 0;
    let mut failed = 0;
    for (i, (segment, result)) in response
        .draw
        .body
        .entropy
        .segments
        .iter()
        .zip(&results)
        .enumerate()
    {
        let at = format!(
            "segment {} ({} chunk {}, bytes {}..{})",
            i + 1,
            segment.device,
            segment.chunk_seq,
            segment.offset,
            u64::from(segment.offset) + u64::from(segment.length)
        );
        match result {
            SegmentResult::Verified => {
                println!(
                    "ok   {at}: the device signed the chunk and the draw's bytes are its slice"
                )
            }
            SegmentResult::Pending => {
                pending += 1;
                println!("pending {at}: the chunk is not exhausted yet; check again later");
            }
            SegmentResult::Failed(why) => {
                failed += 1;
                println!("FAILED {at}: {why}");
            }
        }
    }
    if failed > 0 {
        println!("FAILED provenance of {failed} segment(s)");
        return Ok(1);
    }
    if pending > 0 {
        // The record itself verified; its provenance can be checked once the
        // chunks are used up (docs/DERIVATION.md §10.4).
        println!("VERIFIED (provenance pending for {pending} segment(s))");
    } else {
        println!("VERIFIED");
    }
    Ok(0)
}

/// The provenance of one segment.
enum SegmentResult {
    Verified,
    /// The chunk is in the ledger but not exhausted: 409 `chunk_not_exhausted`.
    Pending,
    Failed(String),
}

/// A chunk as its source gave it.
enum Fetched {
    Chunk(geiger_protocol::provenance::PublicChunk),
    NotExhausted,
    Missing(String),
}

/// Checks every segment of a (verified) draw against its chunk from `source`.
fn check_provenance(
    draw: &DrawResponse,
    keys: &KeySet,
    source: &str,
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<Vec<SegmentResult>> {
    let entropy = &draw.draw.body.entropy;
    let bytes = hex::decode(&entropy.hex).context("the draw's entropy is not hex")?;
    let Some(slices) = geiger_protocol::provenance::segment_bytes(&entropy.segments, &bytes) else {
        bail!("the segment lengths do not add up to the draw's entropy");
    };
    let client = if is_url(source) {
        Some((
            http_client(ca_file)?,
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        ))
    } else {
        None
    };
    let mut out = Vec::new();
    for (segment, slice) in entropy.segments.iter().zip(slices) {
        let fetched = match &client {
            Some((client, runtime)) => {
                let url = format!(
                    "{}/v1/chunks/{}/{}",
                    source.trim_end_matches('/'),
                    segment.device,
                    segment.chunk_seq
                );
                runtime.block_on(fetch_chunk(client, &url))?
            }
            None => {
                let path = std::path::Path::new(source)
                    .join(format!("{}-{}.json", segment.device, segment.chunk_seq));
                match std::fs::read_to_string(&path) {
                    Ok(text) => Fetched::Chunk(
                        serde_json::from_str(&text)
                            .with_context(|| format!("{} is not a chunk", path.display()))?,
                    ),
                    Err(_) => Fetched::Missing(format!("no file {}", path.display())),
                }
            }
        };
        out.push(match fetched {
            Fetched::Chunk(chunk) => {
                match geiger_protocol::provenance::check_segment(
                    segment,
                    slice,
                    &draw.draw.body.issued_at,
                    &chunk,
                    keys,
                ) {
                    Ok(()) => SegmentResult::Verified,
                    Err(e) => SegmentResult::Failed(e.to_string()),
                }
            }
            Fetched::NotExhausted => SegmentResult::Pending,
            Fetched::Missing(why) => SegmentResult::Failed(why),
        });
    }
    Ok(out)
}

async fn fetch_chunk(client: &reqwest::Client, url: &str) -> anyhow::Result<Fetched> {
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("fetching {url}"))?;
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .with_context(|| format!("reading {url}"))?;
    match status {
        200 => Ok(Fetched::Chunk(
            serde_json::from_str(&text).with_context(|| format!("{url} did not answer a chunk"))?,
        )),
        409 if serde_json::from_str::<geiger_protocol::ErrorBody>(&text)
            .is_ok_and(|e| e.error.code == geiger_protocol::ErrorCode::ChunkNotExhausted) =>
        {
            Ok(Fetched::NotExhausted)
        }
        404 => {
            let why = serde_json::from_str::<geiger_protocol::ErrorBody>(&text)
                .map(|e| e.error.message)
                .unwrap_or(text);
            Ok(Fetched::Missing(format!("{url} answered 404: {why}")))
        }
        _ => bail!("{url} answered {status}: {text}"),
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
