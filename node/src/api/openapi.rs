//! `/v1/openapi.json`, generated from the handlers' annotations and the
//! protocol crate's types (utoipa), so it cannot drift from the code.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "geiger",
        description = "Auditable random numbers from radioactive decay. Every error is `{\"error\": {\"code\", \"message\", ...}}`."
    ),
    paths(
        super::chains::create,
        super::chains::get,
        super::chains::draws,
        super::chains::of_customer,
        super::draws::create,
        super::draws::get,
        super::draws::keys,
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
    modifiers(&Security)
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer =
            || SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        components.add_security_scheme("api_key", bearer());
        components.add_security_scheme("admin_token", bearer());
    }
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "health", responses((status = 200, description = "OpenAPI 3.1")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
