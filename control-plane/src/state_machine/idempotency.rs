//! Exact idempotency: is a request that reuses an idempotency key the same
//! request as the one that first used it?
//!
//! A draw's key is its `previous` and `request_id`, a chain's key its
//! customer and `request_id`. A repeat gets the original 201 body back only
//! when it asks for exactly what the original asked for; a key reused for a
//! different request is refused (`Rejection::RequestIdReused`) rather than
//! answered with a record the request did not ask for.
//!
//! The comparison is structural, on the parsed request, so a retry that
//! orders its JSON keys differently, spaces them differently or spells a
//! default out (`"unique": false`) is still the same request. It compares
//! against what the ledger already holds (a draw's original request bytes,
//! a chain's tag), so it needs no new stored state, and it is a pure
//! function of those bytes and the command, so every replica decides alike.

use geiger_protocol::DrawRequest;

/// The first field in which `retry` differs from the request stored as
/// `original` (its exact bytes), or `None` when they are the same request.
///
/// `previous` and `request_id` are compared too, though the caller found
/// `original` through them, so the answer never rests on how it was found.
/// A stored request that no longer parses (it was parsed when it was
/// applied, so only a change of the request type could do that) is the
/// same request only if the bytes are identical.
pub(crate) fn draw_difference(
    original: &[u8],
    retry: &DrawRequest,
    retry_bytes: &[u8],
) -> Option<&'static str> {
    let Ok(original) = serde_json::from_slice::<DrawRequest>(original) else {
        return (original != retry_bytes).then_some("request");
    };
    if original.previous != retry.previous {
        Some("previous")
    } else if original.request_id != retry.request_id {
        Some("request_id")
    } else if original.tag != retry.tag {
        Some("tag")
    } else if original.spec != retry.spec {
        Some("spec")
    } else {
        None
    }
}

/// The first field in which a chain request differs from the one that
/// created the chain (a chain request is its `tag` and `request_id`; the
/// `request_id` is the key it was found by).
pub(crate) fn chain_difference(original_tag: &str, retry_tag: &str) -> Option<&'static str> {
    (original_tag != retry_tag).then_some("tag")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINAL: &str = r#"{"previous":"ch_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","tag":"round 1","request_id":"r-1","spec":{"kind":"integers","min":1,"max":6,"count":2}}"#;

    fn difference(retry: &str) -> Option<&'static str> {
        let parsed: DrawRequest = serde_json::from_str(retry).unwrap();
        draw_difference(ORIGINAL.as_bytes(), &parsed, retry.as_bytes())
    }

    #[test]
    fn the_same_request_written_differently_is_the_same_request() {
        assert_eq!(difference(ORIGINAL), None);
        let reordered = r#"{ "spec": {"unique": false, "count": 2, "max": 6, "min": 1, "kind": "integers"},
            "request_id": "r-1", "tag": "round 1", "previous": "ch_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" }"#;
        assert_eq!(difference(reordered), None);
    }

    #[test]
    fn a_request_differing_in_any_field_is_another_request() {
        let cases = [
            (ORIGINAL.replace("round 1", "round 2"), "tag"),
            (ORIGINAL.replace(r#""count":2"#, r#""count":3"#), "spec"),
            (
                ORIGINAL.replace(r#""count":2}"#, r#""count":2,"unique":true}"#),
                "spec",
            ),
            (ORIGINAL.replace("r-1", "r-2"), "request_id"),
            (ORIGINAL.replace("ch_aaaa", "ch_bbbb"), "previous"),
        ];
        for (retry, field) in cases {
            assert_eq!(difference(&retry), Some(field), "{retry}");
        }
    }

    #[test]
    fn an_unparsable_original_matches_only_the_identical_bytes() {
        let retry: DrawRequest = serde_json::from_str(ORIGINAL).unwrap();
        let stored = br#"{"not":"a draw request"}"#;
        assert_eq!(draw_difference(stored, &retry, stored), None);
        assert_eq!(
            draw_difference(stored, &retry, ORIGINAL.as_bytes()),
            Some("request")
        );
    }

    #[test]
    fn a_chain_request_is_its_tag() {
        assert_eq!(chain_difference("lotto", "lotto"), None);
        assert_eq!(chain_difference("lotto", "Lotto"), Some("tag"));
    }
}
