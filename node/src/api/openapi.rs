//! `/v1/openapi.json`: the OpenAPI 3.1 document, generated from the
//! handlers' annotations and the protocol crate's schemas (utoipa), so the
//! limits it publishes are the constants the server checks.
//!
//! Handlers that answer with stored bytes or with views assembled from
//! ledger types (which do not derive schemas) are described by the view
//! types in [`views`]; node/tests/openapi/check.sh runs schemathesis
//! against a real node, whose response-schema check catches any drift
//! between a view and what the handler sends.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "geiger",
        description = "Auditable random numbers from radioactive decay.\n\n\
            Every error is `{\"error\": {\"code\", \"message\", ...}}` (schema `ErrorBody`), \
            with the status that goes with its `code`. Customers send \
            `Authorization: Bearer <api key>` (`api_key`), operators the admin token \
            (`admin_token`); everything else is public. The request limits are \
            docs/DERIVATION.md §5; rules between two fields (`min ≤ max`, `k ≤ n`, \
            `unique` counts) and the tag's byte length are stated in the descriptions. \
            Integers are JSON integers, written without a fraction or exponent \
            (`3`, not `3.0`); other numbers are refused with 400 `invalid_json`."
    ),
    paths(
        super::chains::create,
        super::chains::get,
        super::chains::draws,
        super::chains::of_customer,
        super::draws::create,
        super::draws::get,
        super::draws::keys,
        super::chunks::get,
        super::admin::cluster_status,
        super::admin::create_customer,
        super::admin::change_member,
        super::admin::rotate_key,
        super::admin::backup,
        super::links::register,
        super::links::list,
        super::links::remove,
        super::links::chunk,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
        document,
    ),
    components(schemas(geiger_protocol::ErrorCode)),
    modifiers(&Security),
    tags(
        (name = "chains", description = "Opening chains and reading them (reads are public)"),
        (name = "draws", description = "Drawing on a chain and looking draws up (lookups are public)"),
        (name = "keys", description = "Signing and device public keys, and exhausted device-signed chunks"),
        (name = "operators", description = "Cluster operation, behind the admin token"),
        (name = "health", description = "Liveness, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme(
            "api_key",
            bearer(
                "A customer's API key (`gk_` and 64 hex digits), from `POST /v1/admin/customers`",
            ),
        );
        components.add_security_scheme(
            "admin_token",
            bearer("The cluster's admin token (`api.admin_token`)"),
        );
        components.add_security_scheme(
            "metrics_token",
            bearer("The metrics scrape token (`api.metrics_token`); the admin token also reads `/metrics`"),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "health", operation_id = "get_openapi_document",
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Schemas of responses that handlers assemble from stored bytes or ledger
/// types. Never serialized: each mirrors what its handler writes.
pub mod views {
    use std::collections::BTreeMap;

    use geiger_protocol::{ChainResponse, DrawResponse, RecordId};
    use utoipa::ToSchema;

    /// `GET /v1/chains/{id}`.
    #[derive(ToSchema)]
    pub struct ChainView {
        /// The genesis record, the original 201 body of `POST /v1/chains`.
        pub genesis: ChainResponse,
        /// Draws on the chain so far.
        #[schema(minimum = 0)]
        pub length: u64,
        /// The `previous` for the next draw: the newest draw, or the genesis.
        pub head: RecordId,
        pub customer: String,
    }

    /// `GET /v1/chains/{id}/draws`.
    #[derive(ToSchema)]
    pub struct DrawPage {
        pub chain: RecordId,
        /// In chain order, each the original 201 body.
        #[schema(max_items = 100)]
        pub draws: Vec<DrawResponse>,
        /// The `after` of the next page; absent on the last page.
        pub next_after: Option<u64>,
    }

    #[derive(ToSchema)]
    pub struct CustomerChain {
        pub id: RecordId,
        pub ledger_index: u64,
    }

    /// `GET /v1/customers/{id}/chains`.
    #[derive(ToSchema)]
    pub struct CustomerChains {
        pub customer: String,
        #[schema(max_items = 100)]
        pub chains: Vec<CustomerChain>,
        /// The `after` of the next page; absent on the last page.
        pub next_after: Option<u64>,
    }

    /// `GET /healthz`.
    #[derive(ToSchema)]
    pub struct Alive {
        /// Always `ok`.
        pub status: String,
    }

    /// `GET /readyz`.
    #[derive(ToSchema)]
    pub struct Readiness {
        pub ready: bool,
        /// Why not, when `ready` is false.
        pub because: Option<String>,
    }

    /// A member's addresses and placement labels.
    #[derive(ToSchema)]
    pub struct Member {
        /// `host:port` of the internal listener (Raft RPC, forwarded writes).
        pub rpc_addr: String,
        /// `host:port` of the public HTTP API.
        pub api_addr: String,
        pub zone: String,
        pub cloud: String,
        pub region: String,
    }

    /// Which failures the voters' placement survives.
    #[derive(ToSchema)]
    pub struct Placement {
        pub voters: u64,
        pub majority: u64,
        pub survives_node_loss: bool,
        pub survives_zone_loss: bool,
        pub survives_cloud_loss: bool,
        pub zones: BTreeMap<String, u64>,
        pub clouds: BTreeMap<String, u64>,
        pub warnings: Vec<String>,
    }

    #[derive(ToSchema)]
    pub struct PeerStatus {
        pub id: u64,
        pub matched_index: Option<u64>,
        pub lag: Option<u64>,
    }

    #[derive(ToSchema)]
    pub struct DevicePool {
        pub device: String,
        pub pooled_bytes: u64,
        pub used_bytes: u64,
        pub appended_chunks: u64,
        pub quarantined_chunks: u64,
        pub first_seq: Option<u64>,
        pub last_seq: Option<u64>,
    }

    #[derive(ToSchema)]
    pub struct Lease {
        pub device: String,
        pub owner: u64,
        pub epoch: u64,
        pub expires_at_ms: u64,
    }

    /// `GET /v1/cluster/status`: this node's view of the cluster.
    #[derive(ToSchema)]
    pub struct ClusterStatus {
        /// The node that answered.
        pub answered_by: u64,
        /// Whether it can serve draws now.
        pub ready: bool,
        pub not_ready_because: Option<String>,
        /// Device → seconds of current demand its pool bytes cover; `null`
        /// when there is no demand.
        pub pool_seconds_of_demand: BTreeMap<String, Option<f64>>,
        /// The answering node's device-link public key, hex.
        pub link_key: String,
        pub node_id: u64,
        /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
        pub state: String,
        pub leader: Option<u64>,
        pub term: u64,
        pub last_log_index: Option<u64>,
        pub last_applied_index: Option<u64>,
        pub snapshot_index: Option<u64>,
        pub purged_index: Option<u64>,
        pub millis_since_quorum_ack: Option<u64>,
        pub voters: Vec<u64>,
        pub learners: Vec<u64>,
        /// Node ID → member.
        pub members: BTreeMap<String, Member>,
        /// Only on the leader.
        pub peers: Vec<PeerStatus>,
        pub pool_bytes: u64,
        pub devices: Vec<DevicePool>,
        pub leases: Vec<Lease>,
        pub placement: Placement,
        /// Device → its source, as its latest report says: only the devices
        /// whose link sessions run on the answering node.
        pub sources: BTreeMap<String, crate::metrics::SourceView>,
        pub feature_level: FeatureLevels,
    }

    /// The cluster feature level (docs/ARCHITECTURE.md, "Cluster feature
    /// level").
    #[derive(ToSchema)]
    pub struct FeatureLevels {
        /// The level in force, as the answering node has applied it: what
        /// every member's build supports, raised by the leader.
        pub cluster: u32,
        /// The highest level the answering node's build supports.
        pub build: u32,
    }

    /// `POST /v1/admin/members`.
    #[derive(ToSchema)]
    pub struct PlacementAfterChange {
        pub placement: Placement,
    }

    /// `POST /v1/admin/keys/rotate`.
    #[derive(ToSchema)]
    pub struct RotatedKey {
        /// The new current key (`GET /v1/keys`).
        pub key_id: String,
    }

    /// `DELETE /v1/admin/links/{device}`.
    #[derive(ToSchema)]
    pub struct RemovedLink {
        pub removed: String,
    }

    /// A link as `GET /v1/admin/links` shows it.
    #[derive(ToSchema)]
    pub struct LinkStatus {
        pub device: String,
        pub address: String,
        /// The registered Ed25519 public key, hex.
        pub public_key: String,
        pub registered_at_ms: u64,
        /// The lease holder, whether or not its lease still runs.
        pub owner: Option<u64>,
        /// The fencing epoch; 0 before the first lease.
        pub epoch: u64,
        pub lease_expires_at_ms: Option<u64>,
        pub pooled_bytes: u64,
        pub used_bytes: u64,
        pub appended_chunks: u64,
        pub quarantined_chunks: u64,
        pub skipped_chunks: u64,
        pub first_seq: Option<u64>,
        pub last_seq: Option<u64>,
        pub unhealthy: bool,
        /// The lease runs now (by this node's clock).
        pub lease_active: bool,
        /// Milliseconds the lease has left (0 when expired or none).
        pub lease_remaining_ms: u64,
        /// Pool bytes from this device.
        pub pool_depth_bytes: u64,
        /// This node runs the link's session, connected and healthy.
        pub up_here: bool,
        /// The device's latest report on its source; only from the node
        /// that runs the link's session (`null` elsewhere, or from a device
        /// older than link protocol version 4).
        pub source: Option<crate::metrics::SourceView>,
    }

    /// `GET /v1/admin/links`.
    #[derive(ToSchema)]
    pub struct LinkList {
        pub answered_by: u64,
        pub pool_bytes: u64,
        pub links: Vec<LinkStatus>,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use geiger_protocol::api::{MAX_REQUEST_ID_BYTES, MAX_TAG_BYTES};
    use geiger_protocol::spec::{MAX_BYTES, MAX_SELECTION_N, MAX_VALUES};
    use serde_json::{json, Value};

    use super::ApiDoc;
    use utoipa::OpenApi;

    fn document() -> Value {
        serde_json::to_value(ApiDoc::openapi()).unwrap()
    }

    /// Every operation: (method, path, operation object).
    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut all = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                all.push((method.clone(), path.clone(), operation.clone()));
            }
        }
        all
    }

    /// Follows a local `$ref`.
    fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str() {
            Some(reference) => {
                let name = reference.strip_prefix("#/components/schemas/").unwrap();
                resolve(doc, &doc["components"]["schemas"][name])
            }
            None => schema,
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_one_operation_id_per_operation() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let operations = operations(&doc);
        assert!(operations.len() >= 20, "{} operations", operations.len());
        let mut seen = BTreeSet::new();
        for (method, path, operation) in &operations {
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(
                seen.insert(id.to_string()),
                "operationId {id} is used twice"
            );
        }
    }

    #[test]
    fn every_response_has_a_schema_and_every_error_is_the_error_body() {
        let doc = document();
        for (method, path, operation) in operations(&doc) {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let content = response["content"]
                    .as_object()
                    .unwrap_or_else(|| panic!("{method} {path} {status} has no content"));
                for (media_type, media) in content {
                    assert!(
                        media.get("schema").is_some(),
                        "{method} {path} {status} {media_type} has no schema"
                    );
                    let is_error =
                        status.starts_with('4') || status.starts_with('5') && path != "/readyz";
                    if is_error {
                        assert_eq!(media_type, "application/json", "{method} {path} {status}");
                        assert_eq!(
                            media["schema"]["$ref"], "#/components/schemas/ErrorBody",
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
        let codes = &doc["components"]["schemas"]["ErrorCode"]["enum"];
        assert!(codes
            .as_array()
            .unwrap()
            .contains(&json!("request_timeout")));
    }

    #[test]
    fn a_reused_request_id_is_a_documented_422_of_both_writes() {
        let doc = document();
        let codes = &doc["components"]["schemas"]["ErrorCode"]["enum"];
        assert!(codes
            .as_array()
            .unwrap()
            .contains(&json!("request_id_reused")));
        for path in ["/v1/draws", "/v1/chains"] {
            let description = doc["paths"][path]["post"]["responses"]["422"]["description"]
                .as_str()
                .unwrap_or_default();
            assert!(
                description.contains("`request_id_reused`"),
                "{path}: {description}"
            );
        }
    }

    #[test]
    fn operations_behind_credentials_name_their_bearer_scheme() {
        let doc = document();
        for name in ["api_key", "admin_token", "metrics_token"] {
            let scheme = &doc["components"]["securitySchemes"][name];
            assert_eq!(scheme["type"], "http", "{name}");
            assert_eq!(scheme["scheme"], "bearer", "{name}");
        }
        for (method, path, operation) in operations(&doc) {
            let expected = if path.starts_with("/v1/admin") || path == "/v1/cluster/status" {
                Some("admin_token")
            } else if path == "/metrics" {
                Some("metrics_token")
            } else if method == "post" {
                Some("api_key")
            } else {
                None
            };
            let named = operation["security"][0]
                .as_object()
                .and_then(|s| s.keys().next().cloned());
            assert_eq!(named.as_deref(), expected, "{method} {path}");
            if expected.is_some() {
                assert!(
                    operation["responses"].get("401").is_some(),
                    "{method} {path} documents no 401"
                );
            }
        }
    }

    #[test]
    fn request_bodies_refuse_unknown_fields() {
        let doc = document();
        for (method, path, operation) in operations(&doc) {
            let Some(body) = operation.get("requestBody") else {
                continue;
            };
            assert_eq!(body["required"], true, "{method} {path}");
            let schema = resolve(&doc, &body["content"]["application/json"]["schema"]);
            assert_eq!(
                schema["additionalProperties"], false,
                "{method} {path} accepts unknown fields in the spec"
            );
        }
    }

    #[test]
    fn every_spec_kind_carries_its_limits_and_refuses_unknown_fields() {
        let doc = document();
        let spec = &doc["components"]["schemas"]["Spec"]["oneOf"];
        let variants = spec.as_array().unwrap();
        let kind = |v: &Value| {
            v["properties"]["kind"]["enum"][0]
                .as_str()
                .unwrap()
                .to_string()
        };
        let kinds: Vec<String> = variants.iter().map(kind).collect();
        assert_eq!(kinds, ["integers", "permutation", "selection", "bytes"]);
        let range = |variant: &Value, field: &str| {
            let field = &variant["properties"][field];
            assert_eq!(field["type"], "integer");
            (
                field["minimum"].as_f64().unwrap(),
                field["maximum"].as_f64().unwrap(),
            )
        };
        let max_values = f64::from(MAX_VALUES);
        for variant in variants {
            assert_eq!(variant["additionalProperties"], false, "{}", kind(variant));
            match kind(variant).as_str() {
                "integers" => {
                    assert_eq!(range(variant, "count"), (1.0, max_values));
                    assert_eq!(range(variant, "min"), (i64::MIN as f64, i64::MAX as f64));
                    assert_eq!(range(variant, "max"), (i64::MIN as f64, i64::MAX as f64));
                    assert_eq!(variant["properties"]["unique"]["type"], "boolean");
                }
                "permutation" => assert_eq!(range(variant, "n"), (1.0, max_values)),
                "selection" => {
                    assert_eq!(range(variant, "k"), (1.0, max_values));
                    assert_eq!(range(variant, "n"), (1.0, MAX_SELECTION_N as f64));
                }
                "bytes" => assert_eq!(range(variant, "count"), (1.0, f64::from(MAX_BYTES))),
                other => panic!("unexpected kind {other}"),
            }
            // No unsigned field may be published as a signed 32-bit one
            // unless its maximum fits.
            for (name, field) in variant["properties"].as_object().unwrap() {
                if field["format"] == "int32" {
                    assert!(
                        field["maximum"].as_f64().unwrap() <= f64::from(i32::MAX),
                        "{name}"
                    );
                }
            }
        }
    }

    #[test]
    fn tags_and_request_ids_carry_their_rules_in_both_request_bodies() {
        let doc = document();
        for name in ["DrawRequest", "CreateChainRequest"] {
            let properties = &doc["components"]["schemas"][name]["properties"];
            let tag = &properties["tag"];
            assert_eq!(tag["maxLength"], MAX_TAG_BYTES, "{name}");
            assert_eq!(
                tag["pattern"],
                geiger_protocol::schema::tag_pattern().as_str(),
                "{name}"
            );
            assert!(tag["description"].as_str().unwrap().contains("bytes"));
            let request_id = &properties["request_id"];
            assert_eq!(request_id["pattern"], "^[A-Za-z0-9._:-]{1,128}$", "{name}");
            assert_eq!(request_id["maxLength"], MAX_REQUEST_ID_BYTES, "{name}");
        }
    }

    #[test]
    fn no_integer_in_the_document_is_an_unbounded_int32() {
        fn walk(value: &Value, at: &str) {
            match value {
                Value::Object(map) => {
                    if map.get("format") == Some(&json!("int32")) {
                        let max = map.get("maximum").and_then(Value::as_f64);
                        assert!(
                            max.is_some_and(|m| m <= f64::from(i32::MAX)),
                            "{at} is int32 without a maximum that fits"
                        );
                    }
                    for (key, inner) in map {
                        walk(inner, &format!("{at}/{key}"));
                    }
                }
                Value::Array(items) => {
                    for (i, inner) in items.iter().enumerate() {
                        walk(inner, &format!("{at}/{i}"));
                    }
                }
                _ => {}
            }
        }
        walk(&document(), "");
    }
}
