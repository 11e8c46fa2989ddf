//! The verification page: `/verify` and `/verify/{draw_id}`, served by
//! every node, where a player checks a draw. The page is static: its HTML,
//! stylesheet and script are embedded in the binary at build time, and the
//! script (the TypeScript verifier of `clients/typescript`, bundled into
//! `node/assets/verify/verify.js`) fetches the draw, `/v1/keys`, the
//! neighbouring draws and each entropy segment's chunk (`/v1/chunks`,
//! docs/DERIVATION.md §10) from this node and computes the verdict in the
//! browser. The node vouches for nothing here: the browser checks.
//!
//! The bundle is committed so that `cargo build` needs no npm;
//! `clients/check.sh` rebuilds it from source and fails when it differs.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const PAGE: &str = include_str!("../../assets/verify/index.html");
const STYLE: &str = include_str!("../../assets/verify/verify.css");
const SCRIPT: &str = include_str!("../../assets/verify/verify.js");

/// Everything the page needs comes from this node; nothing inline, no
/// framing by other sites.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The page's routes, merged into the public API router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/verify", get(page))
        .route("/verify/{draw_id}", get(page))
        .route("/verify/assets/verify.js", get(script))
        .route("/verify/assets/verify.css", get(style))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Short: a node upgraded to a new verifier serves it within minutes.
    headers.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

/// The same HTML for `/verify` and for any `/verify/{draw_id}`: the script
/// reads the ID from the address, so a draw ID that is malformed or unknown
/// gets its explanation on the page rather than a bare error.
async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_its_script_and_style_from_the_routes_that_serve_them() {
        assert!(PAGE.contains(r#"src="/verify/assets/verify.js""#));
        assert!(PAGE.contains(r#"href="/verify/assets/verify.css""#));
        // No inline script or style: the content security policy forbids them.
        assert!(!PAGE.contains("<script>") && !PAGE.contains("<style"));
    }

    #[test]
    fn the_embedded_script_is_the_bundled_verifier() {
        assert!(SCRIPT.len() > 10_000, "the bundle looks empty");
        assert!(SCRIPT.contains("geiger-derive-v1"));
        assert!(SCRIPT.contains("geiger-derive-v2"));
    }

    #[tokio::test]
    async fn each_route_answers_with_its_content_type_and_the_security_headers() {
        use axum::body::Body;
        use axum::http::{Request, StatusCode};
        use tower::ServiceExt;

        let router: Router = routes::<()>();
        for (path, kind) in [
            ("/verify", "text/html"),
            ("/verify/dr_anything", "text/html"),
            ("/verify/assets/verify.js", "text/javascript"),
            ("/verify/assets/verify.css", "text/css"),
        ] {
            let response = router
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let headers = response.headers();
            assert!(headers[CONTENT_TYPE].to_str().unwrap().starts_with(kind));
            assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert!(headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("script-src 'self'"));
        }
    }
}
