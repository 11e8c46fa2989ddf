//! OpenAPI schemas (utoipa) for the request rules that a derive cannot
//! state: the tag's refused characters, the `request_id` alphabet, and each
//! draw kind's limits. They are built from the same constants and tables the
//! checks use ([`crate::spec`], [`crate::api`]), so the published document
//! and the server refuse the same requests. Rules between two fields
//! (`min ≤ max`, `k ≤ n`, `count` within a `unique` range) and the tag's
//! byte length have no JSON Schema form; they are stated in descriptions.

use utoipa::openapi::schema::{
    AdditionalProperties, Object, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::{KnownFormat, RefOr};

use crate::api::{FORMAT_CHARACTERS, MAX_REQUEST_ID_BYTES, MAX_TAG_BYTES};
use crate::spec::{MAX_BYTES, MAX_SELECTION_N, MAX_VALUES};

/// The inclusive code point ranges a tag may not contain. Surrogates are
/// not listed: no JSON string the server accepts holds one (serde refuses
/// a lone `\uD800` with 400), and common JSON Schema regex engines refuse
/// them in a class.
pub fn refused_tag_ranges() -> Vec<(u32, u32)> {
    let mut ranges = vec![
        (0x0000, 0x001F),
        (0x007F, 0x009F),
        (0x2028, 0x2029),
        (0xFDD0, 0xFDEF),
    ];
    ranges.extend((0..=0x10).map(|plane| (plane << 16 | 0xFFFE, plane << 16 | 0xFFFF)));
    ranges.extend_from_slice(FORMAT_CHARACTERS);
    ranges.sort_unstable();
    ranges
}

/// One code point inside a character class, in a form that ECMA-262 (in
/// Unicode mode, as JSON Schema asks), Python's `re` and Rust's `regex`
/// read alike: `\uXXXX` in the basic plane, the character itself beyond it
/// (the three dialects spell astral escapes differently).
fn class_char(code: u32) -> String {
    match char::from_u32(code) {
        Some(c) if code > 0xFFFF => c.to_string(),
        _ => format!("\\u{code:04X}"),
    }
}

/// `^[^…]*$`: a string without any refused character.
pub fn tag_pattern() -> String {
    let class: String = refused_tag_ranges()
        .into_iter()
        .map(|(lo, hi)| {
            if lo == hi {
                class_char(lo)
            } else {
                format!("{}-{}", class_char(lo), class_char(hi))
            }
        })
        .collect();
    format!("^[^{class}]*$")
}

/// `tag`: at most [`MAX_TAG_BYTES`] bytes of UTF-8, no hidden characters.
pub fn tag() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(MAX_TAG_BYTES))
        .pattern(Some(tag_pattern()))
        .description(Some(format!(
            "The operator's label (e.g. a game round). At most {MAX_TAG_BYTES} bytes of UTF-8: \
             `maxLength` counts characters, so it is the whole rule only for ASCII, and a tag \
             with multi-byte characters reaches the limit sooner. Refused (the pattern): control \
             characters, Unicode format characters (bidi embeddings, overrides and isolates, \
             zero-width characters, the byte-order mark), the line and paragraph separators and \
             the non-characters (docs/DERIVATION.md §5). Refused with 422 `invalid_request`, \
             `field: tag`."
        )))
        .into()
}

/// `request_id`: optional, 1 to [`MAX_REQUEST_ID_BYTES`] of `A-Za-z0-9._:-`.
pub fn request_id() -> Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::String,
            Type::Null,
        ]))
        .min_length(Some(1))
        .max_length(Some(MAX_REQUEST_ID_BYTES))
        .pattern(Some(format!(
            "^[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID_BYTES}}}$"
        )))
        .description(Some(
            "A client idempotency key: a retry of the same request with the same `request_id` \
             gets the original 201 body back (header `geiger-replayed: true`) instead of a \
             second record. Absent or `null`: no idempotency key.",
        ))
        .into()
}

/// An integer in `[min, max]`.
fn integer(min: i128, max: i128, format: KnownFormat, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(format)))
        .minimum(Some(min as f64))
        .maximum(Some(max as f64))
        .description(Some(description))
        .into()
}

/// One variant of [`crate::Spec`]: `kind` fixed, no other field allowed.
fn variant(kind: &str, description: &str, fields: Vec<(&str, Object, bool)>) -> Object {
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .title(Some(kind))
        .description(Some(description))
        .property(
            "kind",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some([kind])),
        )
        .required("kind")
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)));
    for (name, schema, required) in fields {
        object = object.property(name, schema);
        if required {
            object = object.required(name);
        }
    }
    object.into()
}

impl utoipa::PartialSchema for crate::spec::Spec {
    fn schema() -> RefOr<Schema> {
        let values = MAX_VALUES as i128;
        let integers = variant(
            "integers",
            "`count` values in `[min, max]`; distinct when `unique`. Also refused (422): \
             `min > max`, and with `unique`, `count > max − min + 1`.",
            vec![
                (
                    "min",
                    integer(
                        i64::MIN.into(),
                        i64::MAX.into(),
                        KnownFormat::Int64,
                        "Any i64.",
                    ),
                    true,
                ),
                (
                    "max",
                    integer(
                        i64::MIN.into(),
                        i64::MAX.into(),
                        KnownFormat::Int64,
                        "Any i64, at least `min`.",
                    ),
                    true,
                ),
                (
                    "count",
                    integer(1, values, KnownFormat::UInt32, "How many values."),
                    true,
                ),
                (
                    "unique",
                    ObjectBuilder::new()
                        .schema_type(Type::Boolean)
                        .default(Some(false.into()))
                        .description(Some("Distinct values (default false)."))
                        .into(),
                    false,
                ),
            ],
        );
        let permutation = variant(
            "permutation",
            "A uniformly random ordering of `1..=n`.",
            vec![(
                "n",
                integer(1, values, KnownFormat::UInt32, "How many items."),
                true,
            )],
        );
        let selection = variant(
            "selection",
            "`k` distinct values of `1..=n`, in the order drawn. Also refused (422): `k > n`.",
            vec![
                (
                    "k",
                    integer(1, values, KnownFormat::UInt32, "How many values."),
                    true,
                ),
                (
                    "n",
                    integer(
                        1,
                        MAX_SELECTION_N.into(),
                        KnownFormat::UInt64,
                        "Size of the range, at least `k`; at most 2^53 − 1 so values stay exact as doubles.",
                    ),
                    true,
                ),
            ],
        );
        let bytes = variant(
            "bytes",
            "`count` raw bytes, returned as lowercase hex.",
            vec![(
                "count",
                integer(1, MAX_BYTES.into(), KnownFormat::UInt32, "How many bytes."),
                true,
            )],
        );
        OneOfBuilder::new()
            .item(integers)
            .item(permutation)
            .item(selection)
            .item(bytes)
            .description(Some(
                "What to draw, by `kind`. The limits are docs/DERIVATION.md §5; a request \
                 beyond them is refused with 422 `invalid_request` naming the field.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for crate::spec::Spec {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::validate_tag;

    #[test]
    fn the_tag_pattern_refuses_exactly_the_characters_the_server_refuses() {
        let pattern = regex::Regex::new(&tag_pattern()).unwrap();
        for code in 0..=0x10FFFFu32 {
            let Some(c) = char::from_u32(code) else {
                continue;
            };
            let text = c.to_string();
            assert_eq!(
                pattern.is_match(&text),
                validate_tag(&text).is_ok(),
                "U+{code:04X}"
            );
        }
    }

    #[test]
    fn the_request_id_pattern_is_the_documented_one() {
        let schema = serde_json::to_value(request_id()).unwrap();
        assert_eq!(schema["pattern"], "^[A-Za-z0-9._:-]{1,128}$");
        assert_eq!(schema["maxLength"], 128);
    }
}
